"""The preset DEFLATE dictionary of .jcz headers, format 1.1 (docs/FORMAT.md).

Frozen: made once by tools/make_header_dict.py from the headers of sample files
quickstart, lenet5-fashion-prune, lenet5-fashion-lrs, lenet300-fashion-joint,
deep-compression-lenet300, resnet20-fashion-budget, tbasis-b16-r16.
A new dictionary needs a new format version."""

import base64
import zlib

HEADER_DICT: bytes = zlib.decompress(
    base64.b85decode(
        "c-rM#O^>5E5dANly%Dy7CVg7X>}93VYIkR}msS)x#7Uzj5CNH<nO6S$miY>wfx=1eNPB20A-Hf=J-@1F(@)0EGl="
        "o!gGl`3lOIYE8|2OK!}U&z^c2g)cyugcM5nZNg_`-5L$p<2pD3Y(5qm|{!1Ce)vEd?xiyLKpo%lZ_40VVRi|{4?r"
        "0z8ymvAY1%?w!%q1FTZx$w7yv8mVua-IK7?c%wKCjuC^6G0-0A-_rQl=@L<JQ`aWCK4Rl_yPu`@kyRnU?q7LvD_M"
        "uZ$==#%a|_Ag%^ci*&>@7jB8w`#bwgI+l%CG=X<^k)1E<%U#qdSVRGzAw9gjmNeuO*c|I|ePfWunhVqGN_{32@aS"
        "fk1$|tVjlZEoh((uVb`DD%ZiM32#e-i7rg?bW0J!!5_$#WE^z+&)m>f>rd<~)<4;z%{(NKtX58gXPOpO}VE4CNEk"
        "@QI^*;u=12luum4Cky41rQwr>@@YOVaTG6c4PN3XUg8?O#PPhub$N-Sc!_K95=Ze8*We|N;w7%ZOB}^ZT!WW5ikG"
        "+sFL4wvaSdMLC|=?kyu?ww#OLwS&Kt81cOWdD&!EOYUPZA|YHx;;TlsCT(%(O)U@((#px_8698?zwE@Q_T{NTZ-V"
        "<7xcNi*XSWE==U^9)K;DZoGpv(3p5wlanre?-wE$jnft+1Qs?5$_Xq3y4eaS%jeslo%vNcsi`TKqN`2N&SP^%R*="
        "}7v?LszVhqospVNEc|WSSZVSm<Gw$R<vw7u3#_*-E|CIZfq_M9wtkS^n^(eMmKipT}w|*dUX<A&^$I<DSPe0eFg@"
        "`Q%u5(3f{E%^^QdC#j4CJ(x8L6pki>S*>l*%?Uxz6XR>+^~{_0j!UP&sP{RqZS^gPI4a3M%;42&zfUy9Cwh3o65H"
        "U6_nelfxh6$h0+rJF+O4dA~*R`Jdl@_7#z5-~rexiVtu-If6M67|mergqKD!Olw<%D?`Dx>#+jxe-77vu%e)9EeX"
        "KUrnew~qJ_AMopJ;5+QNTF>^K<gtnN_to{TbPpQ6{lVNQPrr{wcd#A@sE%?P5`e4=kg`u(Wp|K;RCw94qJ(K~<NU"
        "HqLebGsd8JKLol4D(dLs*TmFQO;uGl84oBXwQSt+Ibwz{0adP2brqdRalC6E8hA&O#eEGFwG3XPsy`5X6^v0v!##"
        "`9OO9^F<^TQGuq4Ac5v>*RYR2(I%K9F8#|9KiUclpew?I>iyK)`lL9!vMShsBV|k1V3^9v5xK@E6-z@+n!enaG6i"
        "C%GnYXJC;LLQ8!ul@{5Sj?RoEw09oudTXE!QRZ-+<R0fb$Uow~3;c7HFuc@|}l3QIkUQ+7Gw#n+o_lAZ8dN9`xRE"
        "<ZqJ#B#x!mSl<aF$e6<f3ao1dotu-QUa$Y-)vDX3cI*B-Rx8UKDOU~rU&tqs;OcfJkHVs4Rux)HgGg<6Vup5Jk(P"
        "l|NN(GG$B=oD>|y38!!xyzL-$VdDmkT)!>qL;ZG&iVZV~8O-5ZPZZ8_a`%ywR~ROOb`($VE~Hiy$q!f!$9)A(hOZ"
        "Igotg0&Zh^Xaz9wwoaGUT7v>F7(x8E4M=hSsyYFpH)wC1)#(b-_$k}OgvK#>)K$ts;zIGiKqs<#wECksKKi;RqZY"
        "<U%uTEtkBVI((*}U9U65CYKX-vd^)Ps9)Kerf8nNO(hG3TUDi-bu%GAP_Fk?kGvA~u7bQFLwKPPqbUB?R8G<FtkT"
        "YbcGfEqYH07q_4o13sGN0armlC4UgLe~LWq0V2<M<k!L0NoTQ&2D;d)AoZ$d!F1Hz+E92$$;5nT*Z8J~GLR(^#`o"
        "=cubZja>Y*{J7r7WP+zzFQEyj?beJnGPU)D6qpr<PDU0(qql5mMm6kIAL=Q{c>Fe$GastC?JFlG3zf@tW8SuTiOP"
        "-0a^}2y)n>lR`l)E*mc+R2*%RjPn?3bqZr<`^x+WVp3a5Itkx&$h`ws7_BfN4|IAp0aQ!k2TtHML(krlpa68hPe@"
        "7yNTMLOTZ)h(Mg;cTYCp8SAb0YRhZbVlIi^z?jfn8N3xsGgVbTfHf*Zo5iEO?a3ypwWyp0D;ZuA$yVr5U^*qqO}0"
        "iNoilzv(<{P-HV-(=<3a&4iLITo<0m6e04X#XnpITzpt^DPG=uLDT-=ac3_;%t_kRDyVAbdW@UNKIi#H_tNN==NE"
        "gcVMx@@eOx9^EycgAZ)@zOLSOXG)I`*>cNX_$5^6#+kJ6JPk_6@76)m^U{>3f&8O~={E8m44qLYcKKff*O^T1tt4"
        "_!NfO)~pm^Wof33uOgmfLdCtsoJ#_$4P~Ok-e@mc(L|1}vz#-LrpiPPGnLzYC*iVw^ZgR7MeHoiu{BJuN~5js$%>"
        "z=GY|F9lRI7>Di?ZC=weqy-OdGxv&=MipypVp!NEng5lt-NTEAJvw%T-6h2w()(jQTL$kC{<btz?T1->q^-MyIb$"
        "vc?l__i9em)sfIR_pVz2dJp-{F==RXz?a5|L)XzYr{cSg}y1aYL=$8dQZnDa%J-$)&AeFH!6|iWUroRzTHG8ofrR"
        "PZ^l`uH{*J@7<vUCL{yzM%-^`^-wjdAk77X1rh@#ZImd5<d=Tbnpj*VUiRBRMfmp8A8>fwY-Cg=Lo}}Ai_ZpkoYd"
        "37o?|2(#@U8E^i1|9*"
    )
)
HEADER_DICT_ADLER32 = 2298034909  # zlib's dictionary id in every 1.1 and 1.2 header
