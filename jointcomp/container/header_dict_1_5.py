"""The preset DEFLATE dictionary of .jcz headers from format 1.5 on (docs/FORMAT.md):
the 1.1 dictionary, then the records of quantized T-Basis headers it lacked (quantizer
edits, folded batch norms, shared tables), nearest to the header, where DEFLATE reaches them
cheapest.

Frozen: made once by tools/make_header_dict.py --extend from the headers of sample files
resnet32-fashion-tbasis-smoke, tbasis-b16-r16-q4-rows-coef, tbasis-b14-r16-q4-rows-coef.
A new dictionary needs a new format version."""

import base64
import zlib

from .header_dict import HEADER_DICT

EXTENSION: bytes = zlib.decompress(
    base64.b85decode(
        "c-qxiO>g2b5dAMcyH)K8w42jv_f%;wEA0&-<Rk{71_#+;*%tBNcbq^WG(acbPob9J3^VhdCl5Vum|^iqa^Uy)_t#"
        "%z&K&lGZyAf(6eQy;#j9nZa>KUcEg!K$J!>m&?{3r5d>8m%Pp5gBYg0Ll{<u_DEp%n`7tQ#F`P-Or#2!ucb)`&&>"
        "zTii<QN}EoEc?pxt>^MW}3y7UFq!@8^F&`6PKz&_xSpD{6`w)O#R65<{i@JJDs?>TKay);Es#&`*FZ|9Glk(5#s+"
        "CkZIaMZ;~r_fq>yz0(`}}vKSn1+FL4b6XiVpr#sy&^V8_o0K`|uV|Q1yQeLYhx^j^!Nm8YLm?R0448SBwm}CGZAY"
        "p<4OhCc}0hl5ZrYHbYM8XvH#w1TtUalm&bCD`ZQl-9_+`P0^x~lN<z2%O+(x;{%@hAd#6eJ!+0FRP{Nd{n&Bup{@"
        "6Ob@L045+|f&fer2~!k+DI#I&uS-DEB?!<ZAn6hW=n~L%2|{%VNV)_8x&$O$f&g6tk}g4jE&)lGAV8OZq)QN>OF+"
        "^k2+$=U=@JC!5|DHW`sva%y_Ov#2pP9q&MIwOX}t}rO{Hk8n^kMfw)FODfgUct5%QkzY}v#1t>eewZ=ZY*pFOJVV"
        "D1`6T&}9gqRh0bU902~8ez_I^ST&uzx)9gYa|or9bznoja6>0d@PGU;8MA6{B@-g^w-Tt@2=}QJ6qj&MQn86->La"
        "r>wGq^F4)h9v&Rs<eJh4|6ouzCS>;8hEt36Gma)~&=&H8PPitjo&W9jD>0BA33s>)qSuG}Mp`7!a3B;Q()J*Tlk`"
        "K6>I;%Sv9bk8DNY_coeuCb3^k(3G)fvc;3;!DL&tvLyfo62R<VGv&GarwO50`w<9+!JQz(qkB7ZDBL49tOt_OBdy"
        "nxn31mPaQ}vVZ>W?BjOt{T{-o-iXsY@=BgoEBgnx4VB)`YcsV9L8C&-_=!w#j=bU|#;1JDP`dK!8PnC#M+Z%3$v&"
        "OwBbm7L5W9S4{1MYs6;A&KG3aWy3*v#0CdGl0woxVS|5+Js@27ZI`VL9?=ZW{7b`RAt<Lw_pue!VZ_%nDZ@<tAhL"
        "w^F9mclR"
    )
)
HEADER_DICT_1_5: bytes = HEADER_DICT + b"," + EXTENSION
HEADER_DICT_1_5_ADLER32 = 2244017464  # zlib's dictionary id in every 1.5 header
