# cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake: a file's bytes as a NUL-terminated C array.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT} "/* generated from ${IN} */\nconst char ${NAME}[] = {${body} 0x00};\n")
