"""The preset DEFLATE dictionary of .jcz headers (docs/FORMAT.md): typical
header records, the most common last, nearest the header, where DEFLATE reaches them cheapest.

Frozen: made by tools/make_header_dict.py from the headers of the runs in SAMPLES. A file
written with one dictionary cannot be read with another: a new dictionary needs a new format
version."""

import base64
import zlib

SAMPLES = (
    "quickstart",
    "lenet5-fashion-prune",
    "lenet5-fashion-lrs",
    "lenet300-fashion-joint",
    "deep-compression-lenet300",
    "resnet20-fashion-budget",
    "tbasis-b16-r16",
    "resnet32-fashion-tbasis-smoke",
    "tbasis-b16-r16-q4-rows-coef",
    "tbasis-b14-r16-q4-rows-coef",
)
HEADER_DICT: bytes = zlib.decompress(
    base64.b85decode(
        "c-rk;ZEvf%68<lI_Ey*iO8V()_kLMvb#?be`=yE^N=S>ELIh-c&Z+X>cWeXU#k>qoy65UfRi%XB!87yt@yyuf(b|"
        "O;vHtim$m9H%IEjMHA|F<qY<5vl9J4659z2Iw>9J^Bp|-m6mTtw@M@lGR#9b57u)26pT)0T#;*$`*$>VPkH1&v;1"
        "<9-WB<{5yR&XhOmx3IRQ0E^0efVEN+ah?{M;rAsb<5}GVX%jGyI`M3#EQN|;jxI*#Cou{QIbcX&{G^hgCaXdr!`2"
        ")UxF;!S`Q!AKKL4C^v=Eu)8sF9C%XpiT9;{gnRM?C(`dJg!#GL`O{3PYbz9mJIrSu}lZAQ`Lp^DkP7I|JGth~lbY"
        "ccNag<KnKqrpUi5uwTpmcH!baGHSIg52-9g*WtVtQGqCo$BMmg<zhq*(zh1|R1>uF+)4GbzfB)WD7uWk+gYM~2dg"
        "8R*1NIxz#CI7%mOpc6;w#0_+EP&zpVIyoqvmh%!v@e()SC63}HZoo?%&r95tmpF=-xB)M56fbcDUg9WT;s(6LQM|"
        "+rc!{HUi5u_|NAVIj;3baYC2qh=9K}m~887X^Dd}(rLgMKJ*%+i(X(lqY4@;z5>bCbNets!HpiJQ)gCm@9$hsimv"
        "UZ%o4<URy?1MNFshRZvX&fYg_6aggkpb>SV)k^5_uD9g8^5LL1EiTrRLHik??LvQi(4SM3}1pIiS{BHBvx{K+l2c"
        "d&#Rm?ehZ$XGSOr{^f%hZLa)cij%Ibr`;)NiwoG{&!abE}wy(TK8GI?_KPnybB8x>1D{^4?dI+}LIC-wWZ{vNSQq"
        "%InbCw<ts{1NOEtA-?;YMY|*0(52g^QY5HiLB9kwO|-wnN0_6)MZNWxCFnX4j`RdDPMUlu<eB8dX#l+D27Is*MV|"
        "wTx;L`zl6tbVg;k(uK_kwK@EQk8Ib#xD$hd+1DEszyJB~?|nol58MNLrP&)?&krCj*jsI5?t-vLGw9Z~0au2CYhP"
        "ml;C~#hda$CP>Z}OB(WRFlfHH&_#ZFZ~92@wbh#e1uo%I!Fy+^CE*)Qq)Z_uaz?vMHJhaeNB%MWXxzN?OYSjE?a="
        ">H$b5Uf>MSG3;6&;7yQGc$L)W_D$jcF@do0V@itqgIwS@yY#q*tDlXXzfA{V*UjN3ErYY+%C*g+FS6}&q?v?F-Qt"
        "22!6_6f`e2CP%VdoBslPM5@dkw4fN<aYLtVO5~G4@DRfAT9vi!m-jxo#+r?R4+?~~sM$Jp$02jqcvB{!CR$_=b<l"
        "c8m1jT*{pdiWT22J}&#7y?(<_Az_K1gBwR|^Pjgr3(8K)v2lg6mh~67+Au>k7d62@Lm?rmr2)P+Rz0nLtpJK=LL|"
        "w$T@1@J~R@Fh)X%y|Xml<|Rlx$1JeE5=M|VhYpljH!?c6XIZ^D|4+|W{V=sZ?|<TK<=7L`RSW-T^2sAmb-R#9VNf"
        "!sHmzeoq^>{HL%Xna%fKomcU|2wq%x8_%p8?@=1$}gy%RM{&Y8%e*G86hA!+a~Vd%!ZH)ZF`a=Po;UB5_IDM@1Jm"
        "~uK>!s#~Qmmu|d{4&V4`CG8xZ^9&5PPc8gecGqtE0xL1nZDX=<@cyS#v#k_S;r(J03}xNMU<JK<1%yDG#b-&V|<%"
        "*L<HCkF2Qv~G+tM(>PBg5`1Yq@fsTHVraB=bH0qVqkOlAX=^$MD1|0G51GgQUo`G}fvxXRgdY*&ZwOmzszD-v?D("
        "z5XX^3FyYCcOc1WQ&XXGl{^N}I4W<+kS!TDp2NpC5!*DMTv<?>o5m?$9Hr@io|kYVz%LLBM?KSyLH@%IxcOgQEP0"
        "P^tNx+1S*@k-3_jrh=6wM~(6{a_}$GV?2(L2~T^zgdm_%t(gjB8siC>VAdQu8(9pE-YTG(%wgy1&~$<1@yk%oa;P"
        "fVBP%6$!k3#?zg_!ml?##O!hUPBO*P8&R5Y_BF)e#>hxzAvPkdSGH?>UHX5-exDYiBeibAn&@vdINt44)KRwg|S("
        "=6)D@Zfpm4Br+B@oYzT?h@)FmDg}}N2W_STPRTDAIMiAp)pfh5_r`;GhJJv@V+Q#&$Ia*txN0MMv15m4|@SL+Li_"
        "&umv%s#%TZncVQ^nFfg6v_I1-+9s9ak>`YkKtOrei&=qp^VQAs2UjU=c(t$p%aaLZh4j?j$x-2`;&Shf>v@BP;7b"
        "{j)>zqTmGi7yr^_0*%A^IsO!j~xD6j>0yipaA$*TkMPkRnjeT~!gOeHwE973#i&bLPUhVLdv#n*}4fy{uh2mMd$R"
        "DMKd8tSbq`_=s&O6#}wjlE~6*6eP8zg);sMvLzyf-8;;=A~4!eB6{qN)}mugWa}o&c{6FMa^x^m`Tac!=kcrRB}R"
        "kTTiH`%n2x4K+c=DBey-O%#6yq%^z=}xph2OJ9T81AXCy8X)2=`*k<fsHj|?N)Si*&VizeH;=qe_T9|e&9lV)!Uj"
        "RITesm!mz*C)2CPbPeJ1=F4`t1)-Qy@|4#PDc$;QPKIB%rj{5BG1R2db>6}<gB3UVrR}Wl-7*t*i5c$A5{DQ-rgv"
        "Z98YdNG2GomXRQ~1XFKB@)Xq3<i9wt2fknky!}7v~z8WHiAH{&2%?0^)vyR^d`5?^EKzE4a62~LXJ#l=a9j7gST|"
        "M<_J;^l0)(Tq~Yqw-Ak9b>R@S(4g0$AZN=J-GVw;oOGRE#u!7NNVWBWtX>MV+aA5RKA0zImV7uhP-sWoS`OUeDKq"
        "Ppo7~gi!jw0T8+7-8Jvv4veX#yxW=n+nN5`nf}|E{@a=U+nN5`nf}|E{@a=U+nN5`nf}|E{@a;;(=+{aXs0c^uZl"
        "YUsh{y{s&UPYjMpgi+T#T;l`E3-qCaBSd8sG<IL3@EsGs%5gZ^HJ=1cMVm5>TSy&PQu?ou@nxt!lR7od6n;5A+@D"
        "BdmD1q|X<2IFWRc!2=o?D??#ffL{DzAqbu>VQU94x5nE>Pj_m`^W4kR!h|x$wIul(^Rg*CPL)TTcEDE_zL3W-Hk%"
        "ips~A{ZqUToAkO3GM3k7y+WE!FK-XQJif4l~H*3#Y5*hRV=t6{k8Eja*hEl$J!<Qxc35$1DH|+D#kJIR#KQOm>>)"
        "(aI{Wt"
    )
)
HEADER_DICT_ADLER32 = 2244017464  # zlib's dictionary id in every header
