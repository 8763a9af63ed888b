# Rewrites a .cu file for the host emulator (tools/cuda-emulator/README.md): each launch
# kernel<<<cfg>>>(args) becomes ::emu::launch([&](auto... a) { kernel(a...); }, cfg)(args) (a generic lambda, so
# template arguments are deduced as nvcc deduces them); extern __shared__ arrays become the block's dynamic
# buffer. Usage: prep.py in.cu out.cpp
import re, sys
src = open(sys.argv[1]).read()
out = []
i = 0
while True:
    j = src.find('<<<', i)
    if j < 0:
        out.append(src[i:]); break
    # statement start: after the last ; { } before j
    k = max(src.rfind(';', i, j), src.rfind('{', i, j), src.rfind('}', i, j))
    start = k + 1
    out.append(src[i:start])
    callee = src[start:j]
    lead = callee[:len(callee) - len(callee.lstrip())]
    callee = callee.strip()
    e = src.find('>>>', j)
    cfg = src[j+3:e]
    out.append(f'{lead}::emu::launch([&](auto... emu_args) {{ {callee}(emu_args...); }}, {cfg})')
    i = e + 3
s = ''.join(out)
s = re.sub(r'extern __shared__ (?:__align__\(\d+\) )?([\w ]+?) (\w+)\[\];', r'\1* \2 = ::emu::dynamic_smem<\1>();', s)
open(sys.argv[2], 'w').write(s)
