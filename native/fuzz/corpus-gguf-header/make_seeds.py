#!/usr/bin/env python3
"""Writes the two seed files of fuzz_gguf_header (GGUF v3, from the format's published description): string, uint32
and array KVs, tensor infos of F32, Q8_0 and Q4_K tensors, alignment padding and the data. Both parse (flux inspect
describes them as incomplete FLUX transformers). Run from this folder: python3 make_seeds.py"""
import struct


def s(x):
    b = x.encode()
    return struct.pack('<Q', len(b)) + b


def kv_str(k, v): return s(k) + struct.pack('<I', 8) + s(v)
def kv_u32(k, v): return s(k) + struct.pack('<II', 4, v)
def kv_arr_i32(k, vals): return s(k) + struct.pack('<II', 9, 5) + struct.pack('<Q', len(vals)) + b''.join(struct.pack('<i', v) for v in vals)


def gguf(kvs, tensors, align=32):
    """tensors: (name, dims innermost first, ggml type, data bytes)."""
    off, infos, data = 0, b'', b''
    for name, dims, typ, blob in tensors:
        pad = (-off) % align
        data, off = data + b'\0' * pad, off + pad
        infos += s(name) + struct.pack('<I', len(dims)) + b''.join(struct.pack('<Q', d) for d in dims) + struct.pack('<IQ', typ, off)
        data, off = data + blob, off + len(blob)
    body = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + b''.join(kvs) + infos
    return body + b'\0' * ((-len(body)) % align) + data


F32, Q8_0, Q4_K = 0, 8, 12
q8 = struct.pack('<e', 0.5) + bytes(range(32))                         # f16 scale, 32 int8
q4k = struct.pack('<ee', 0.25, 0.125) + bytes(12) + bytes(range(128))  # d, dmin, 12 scale bytes, 128 nibble bytes
f32 = struct.pack('<4f', 1, 2, 3, 4)
open('flux-q8-0.gguf', 'wb').write(gguf(
    [kv_str('general.architecture', 'flux'), kv_str('axes_dim', '[2, 2, 4]'), kv_u32('general.alignment', 32)],
    [('img_in.weight', [4], F32, f32), ('img_in.bias', [32], Q8_0, q8)]))
open('flux-q4-k.gguf', 'wb').write(gguf(
    [kv_str('general.architecture', 'flux'), kv_arr_i32('general.dims', [1, 2, 3])],
    [('double_blocks.0.img_mlp.0.weight', [256, 1], Q4_K, q4k), ('final_layer.linear.bias', [4], F32, f32)]))
