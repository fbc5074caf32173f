"""The preset DEFLATE dictionary of .jcz headers (docs/FORMAT.md): 24,572 bytes of typical header
records, the first chosen last, nearest the header, where DEFLATE reaches them cheapest.

Made by tools/make_header_dict.py from the 41 synthetic headers of SAMPLES ('builder kwargs |
stage mix'; the tool defines the mixes): each model built with random weights, put through its
stage mix with jointcomp's Python API (no training) and written with jointcomp.save. No model of
a reported figure is among them (zoo:small_cnn, zoo:lenet5, zoo:lenet300, zoo:resnet20,
zoo:resnet32): tests/test_header_dict.py measures the dictionary on those, as held-out files.

Frozen: a file written with one dictionary cannot be read with another, so a new dictionary
needs a new format version."""

import base64
import zlib

SAMPLES = (
    'zoo:resnet56 {"in_channels":1,"num_classes":10,"image_size":28} | tbasis-qat-fold',
    'zoo:resnet56 {"in_channels":1,"num_classes":10,"image_size":28} | svd_spatial-budget',
    'zoo:resnet56 {"in_channels":1,"num_classes":10,"image_size":28} | prune-fold-qat4',
    'zoo:resnet56 {"in_channels":1,"num_classes":10,"image_size":28} | sparse-kmeans',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | tucker-fold-qat',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | tbasis-coupled-qat',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | svd_spatial-ptq',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | lrs-qat',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | tbasis-foldbn-ptq',
    'zoo:resnet56 {"num_classes":10,"width":0.5} | ptq8',
    'zoo:vit {"in_channels":1,"num_classes":10,"image_size":28} | prune-ptq6',
    'zoo:vit {"in_channels":1,"num_classes":10,"image_size":28} | lrs-qat',
    'zoo:vit {"in_channels":1,"num_classes":10,"image_size":28} | tbasis-qat-fold',
    'zoo:vit {"in_channels":1,"num_classes":10,"image_size":28} | sparse-kmeans',
    'zoo:vit {"in_channels":1,"num_classes":10,"image_size":28} | qat-codebook',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | tt-refit',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | prune-lrs-float',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | bits-budget',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | ptq4-tensor-asym-f16',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | sparse-ptq8',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | tbasis-foldbn-ptq',
    'zoo:vit {"dim":48,"depth":3,"heads":3,"image_size":16} | tbasis-float',
    'torchvision:mobilenet_v2 {"num_classes":10,"width_mult":0.35} | prune-fold-qat4',
    'torchvision:mobilenet_v2 {"num_classes":10,"width_mult":0.35} | tucker-fold-qat',
    'torchvision:mobilenet_v2 {"num_classes":10,"width_mult":0.35} | fold-ptq-codecs',
    'torchvision:mobilenet_v3_small {"num_classes":10,"width_mult":0.5} | prune-ptq6',
    'torchvision:mobilenet_v3_small {"num_classes":10,"width_mult":0.5} | ptq4-tensor-asym-f16',
    'torchvision:mobilenet_v3_small {"num_classes":10,"width_mult":0.5} | svd_spatial-ptq',
    'torchvision:mnasnet0_5 {"num_classes":10} | prune-tucker-ptq',
    'torchvision:mnasnet0_5 {"num_classes":10} | sparse-ptq8',
    'torchvision:shufflenet_v2_x0_5 {"num_classes":10} | ptq8',
    'torchvision:shufflenet_v2_x0_5 {"num_classes":10} | tbasis-float',
    'torchvision:squeezenet1_1 {"num_classes":10} | prune-fold-qat4',
    'torchvision:squeezenet1_1 {"num_classes":10} | tt-refit',
    'torchvision:squeezenet1_1 {"num_classes":10} | qat-codebook',
    'torchvision:squeezenet1_1 {"num_classes":10} | cp-ptq',
    'torchvision:resnet18 {"num_classes":10} | prune75-float',
    'torchvision:resnet18 {"num_classes":10} | prune75-qat6-norms',
    'torchvision:resnet18 {"num_classes":10} | prune-tucker-ptq',
    'torchvision:efficientnet_b0 {"num_classes":10} | prune75-qat6-norms',
    'torchvision:regnet_x_400mf {"num_classes":10} | prune75-float',
)
HEADER_DICT: bytes = zlib.decompress(
    base64.b85decode(
        "c-rk;OK;;i68<kbYYdU42bI%cW-kK_7P~u*y#$7#*m9zcEoCG*Np~aveM!AZv1m!LJ$)Fs)7GO*QuP&!^`gF8TkF"
        "n>(!#Q>2kXxHu)kZWb$3sg9o+Z>YuhS#*Zgb8$Fv8^$0SDga)^@D`dEvx9kX40u<pKF52xg?i*tVaTbAABagoNQ="
        "ks4YzeV|DAxM&Rvwe!vG(PZCVq59yxY-_}qKL)0V_V5FdW<(k@-4RRDEqLjc$bu72=~?@`WokSMOND^eH8=w<G=s"
        "-RUGatK8id_pQ|SKS$^b0C|;s6i4J^>{N`}TwsnllNDPLP<OT2N-g-D>+vj5CtfI0^S1)<?zg2V7R_^`z{HnQiJi"
        "M&-TY}!9qdUaV6~VhAXjcU7iW<72cvlqdijKQ_ilbeB##z68+Qi3)xVyOi_^=xY`B>dm5pxtdaMsWKe#8;U1>_v6"
        "w>WuxDl5Q$OUr+sqO|09Du^E{N$|MTM0uXQZ8+qQ9KJF?#kLi_C;TRtpkf;xxCA{#F9KTMb!;L&>yI`6XLn-c)MB"
        "(cWN$)r_*ot=8IC(^I7~Mf(hP?1{(FIzr;2Y|*{PJSR1H+WTkVs)C@(hpc5v0iO!i5fuP)sM${=sRoMHdwo`2;k="
        "poCV#pPOe2=?%){*Xk4VQhk}$n$g6W|eVTWVvXd(!fO0eSCmL$(5DM(R<*(-ae6)&`Mu^iHfA?aTKr#6)Bn_Htjw"
        "_w{nczTQImq>gV6bQF-EObVZz1@#iUy#dBj4LVc!+2teJ;wj0&&Ng7AFIx5X*T-&v&;Gg)_re&$!Xj$HqAhhm6ek"
        "FSojHLW#89i_$+Y4c(dD9A0f9~h}y3@=Z7|b1&^ELRjxXI5e9*?Zs!TY|#Znko6pbA32R|cPvRB7lHGb%a!Z5Q)K"
        "%CEeQUe$04q57I*-=J_@R~09hjij<#5O}AKvKp&{YAI<&iF7%VU$+t8<+{h4tDHOCGqwnXfPK+VAP@qzu4hL*&B6"
        "BCSu6nYmI)M_HGJYwS6N=_)q$(gQet~QG2~}$7yNcjT)s$S>&hqPyj#1Arz|hGr_v-(gs1{VsjWWyS>-4gs#Vv}s"
        "A@$?(pE|Ot&((GJp;gGB?&GJl%!*eKbZHeQ<NNSen@<c&KyqO`28hHcjUbjkZa3lNEPu^)fVX`4i#4QH%?_6sLD<"
        "iX-@Kc_VynR%)bt&;*Z8q{cbgqF1&&As~DwFW33>F>9bEB8^5LPn8Oy-g4JIM+!l2qbi;Kgevi4BCRr*ViMC~yS1"
        "kPa80pduj!Mx;GTjQDZ?m<$lyPw*zNC35ZCKpM6}1`vK=Wavk9=p@86Sl>Bosa7|AHxNI%it?yx~vy!sm7cB5A&U"
        "a#s6QRDu1Aa4-JJ-MpGX!iVgkV7;P%73*vRd392aJK3z$YnkcR1+5l?0dAF5*P9z)#2(RR03#0oT)81<^&018!YA"
        "GJC$p!nG`+133m1$cc})4GyM1&h;sthj9=%oYDQ?4HLbp)@Po9@tcW`Y`>y7lRfK`rHJGWqZC}kq;6grp^m>GE6H"
        "_+{rIk-eDGJgD71E8LN5ldRLa9~!Sa3W;g>vC*}VyW!1x3q|kFNfG@tBm}6pgJEISr|xY(_pRYAx|0{A^pNICuBD"
        "Y(Y+<R@`*#R@}%(G5-*IXMisHc8D6I|@;U1+D$(d{2JPeWg?Rh)niO0E+{OESvQ4-F!5@C};Fz9Xdg6iNm7$f9WR"
        "m;E?UmO3QoSa{p?5|KpE{lDsg_pn+}|wg@GPJ5_)&1^ed9XLaX*<&MHwHB3?g(mW%~H8Ns?;B?`dFDZi{e*=$bqP"
        "Rrz$0-&x9MY_>AfoDN0~t#J8qd$x6w;U@Z0brmZ|s8@87!OOLKCwQ(;&aFMV2z%{`HV<J7r@lLuW1z@&I=W5}dV<"
        "hXgq|YwfY1X%?;`XrLhm8;9zyRU^gco#AoKx3&k%a1rKbp96v0cLlB1ghX^bF^QG}i%^nlO<LhmB<E<*1i^d3U*B"
        "lJE(A0YGrLeCI-J(z%i2?&^A0uvB00Ra;bFaZG*5HJA&6A&-~0TU1~0Ra;bFaZG*5HJA&6A&;#1yiKh8XeuN|ImB"
        "~^UkLD7Ne}_lpI47CYACGP0mBH`WSBXxw6s6Tzw+#%F+AUn!Zf%eye(^(&8&To0b{lwA_tCcan2=-US~ffVWv^Ul"
        "*E@irW{nYC_r~A{f^C0T*su4Z56-7`UDB#O#nyG40<Hqe@e@(CLVA*~0i%8}G;N(9s=Y=!)Q75wt6Uc0~<cQM@aP"
        "c16csRb>m^*-&Z+I(2BH5Atie>Jwja^}0-(bF+enfMWFy-HNRXm<vuQu@1>GuQj)t%T^)`w%>+7D#o^Hq??xx^wG"
        "H`pWrV$3Z@0gr3K(gWE8TryhYGg6|JiN0T$Iipw$n<_*oOX#A76E6eICnXXIAbQ}$M3NMtV6vKWdqh|_>v9rXYGe"
        "Mx^Qm{NSmnM<*lRxd`*;_|MU)n;gdlkqX!N)O_r=n65MS%nz<!egGDUb<jrHSuXT@u@CBhAo9)h?r5eXK|(NI-t6"
        "|0v57r>sKU08cDptJKR7ofO{dA;d?Fbhfdyw+0D%tVH_U0;NSh^dUn%}^YMXJvz&3)G|pP(t{DnsE|_EYRro~KeM"
        "yd8JJ8$K5>Br(@nnt*cYIu9VsMVBPh|I)`rg1Ga=3zZY}S;IwCAQj9qo^DtvO#>0^{7sdG=k!AUKm|DV|RI{UH{q"
        "mRGuYcQ)SSR7)Kva?V;|wZTbr`8V;Y^UGS1b4OK8N)nEOqGe%FyZU3)k)ip|*QAtKy-SXw?2!vr{324GP<xC;bu`"
        "?mz%|4WhJhnFODVQ+$x2b$Frg%gxlVkJbAHkc<i1wg1?TXtKYfXIyCmi9-8<EE*(Hal)|dCS475wEqF9^XZED1=Z"
        "*iW95KdP_(QLJ7#$(OX#C6PYwnWf*i>~WlWWhZ%WsliI($3fk$@9(ebSOmz9XwM)`O9g`!IgsyMHNL7;Zmf6Wt>l"
        ">O&!CPGm79}%)Ghj^fYNos4K-)Jy~nXdTvcE{#4XtNQZT5WI+vkZK4r<JU#5H&F%xfSQ0z%?7+8!K=lZW71?xD1J"
        "37@(g2xKxX8wZi@qpa)K`JdDe3h_3H2tDb<J{5F_G(bV6r8u2F+VJ0^#P$POE<32Uhyy+f)tB)peqSn$WN<{TV3X"
        "lq>J5E>?)32whi!YyKS_#Gw0m-5C7F(#$GKYpQRew!Y}2wpgl3q)}1z^=oaulHzD0K%g6fGdDO;sXwylS9HOzrle"
        "!!%={TGqt>lfi96^+St7X@HUZ0U5W@WQwa;fjF1$JO!W%F@y~(n<19)?QHV5WCn`)k;+u2i_4#=!_^*eS{hFsspa"
        "@j>PvCYzPyW(XeZh74T&50|cY<*%b320)4vPaU)?A9Zxjj7%vsn5@QBn@K?E=gnmtPRUBZZ&UptB+Zhmh2tvr)9O"
        "Ve^9qjSDvH$SfnVMKI92>6f&cz-(?O(4HZ9@r<t|&$<tWB=e?>l65>8505Yhoy>>~2uSxUJYC{Yt+hh7IGyS)Gf4"
        "FJpQ)hvCJayxZQt!1qTRqchq%&h<wK>eCf^5iwLT!T`U5WZ|8Zgz07HnO2?~_o2?!<8%IqI(8Y_~WI#4h`$0k!`@"
        ";k*glDGQywTy^TVV9W~F3q2^-g-w#~;&%bYwZlL4vP{^#IISkaqizA|#gDpe;zhT!<ZKC2vl5K5;?BHHDWn#0$=|"
        "L$xX)F2c{4NY;jA*Rg{}7<Pv9;pc^|r$a_wd@s+v{Hg-mzBc-Pn6CB~MCv1MXxnHpQB#+Ip}Wn$z8F>-?#xj~HFA"
        "VzKwBR8mV%+xq$Y8*2)j+q+AOwWv&8e68umZ`C2Ft!ZFmch_682JoFK7*0Z?&#9EiSf^vX*|p{9A+8~Gl9-bm@^a"
        "P%!D{I0nSW#hbAV3CMJX?CWIy?geE40CMJX?CWIy?gc>HSKd_qk%Y~u+Q9+A%p+XynrV|6vs0Td#WlI-XWSyx28@"
        "ed&DJc85=iMUVe(lmr*ATqELGhCF`2ZV^m*D>~N(W()N#!#A$MAxd;ajyP*ECS|byihXgXygi)#HG^91Do-7wY$@"
        "Uam}ljo%fg2IcDLO&64_H{i@K6F47~tC%{gPN25A1Dn~t`S0%?6Mw;u2{{L$?F#U&0PPAEZqArfngN^Q7#$9C3N("
        "!M8JZm+boBnwt1Y<xbrd*TpugpJ)!yoTuyac$+;O=C(Y$biO@7}5^*#OjCWgCD*bn<1bZ71HZT^Rw^#aS^RL~`A_"
        "S^ngc~gP@Ivrgn2t7gQDMC*XdO+v_p?48_7oqnMdJm!Z5qck?4-onQp=Ss^)6!D}FN)x$ys1FFNsz_}(ilbPDMAk"
        "jJs|WhLhmB<9zyRS^gcrGBlH16A0YG$q1S^62$+C?2_`TB0TU1~0Ra;bFaZG*5HJA&6A&-~0TU1~0Ra;bFaZG*5H"
        "JA&6I3u!!|i%io>#6jcG+c$U;hshsD!E"
    )
)
HEADER_DICT_ADLER32 = 313033898  # zlib's dictionary id in every header
