using System.Buffers.Binary;

namespace FluxNative.Tests;

/// <summary>Reference decodings of stored tensor bytes, written out here so the native conversions are checked against something independent.</summary>
internal static class HandConversions
{
    public static float[] Decode(byte[] raw, DType dtype) => dtype switch
    {
        DType.F32 => Enumerable.Range(0, raw.Length / 4)
            .Select(i => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(i * 4))))
            .ToArray(),
        // bf16 is the top half of a binary32.
        DType.BF16 => Enumerable.Range(0, raw.Length / 2)
            .Select(i => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(i * 2)) << 16))
            .ToArray(),
        DType.F16 => Enumerable.Range(0, raw.Length / 2)
            .Select(i => HalfBitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(i * 2))))
            .ToArray(),
        DType.F8E4M3 => raw.Select(E4M3ToSingle).ToArray(),
        // e5m2 is the top byte of a binary16.
        DType.F8E5M2 => raw.Select(b => HalfBitsToSingle((ushort)(b << 8))).ToArray(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no hand decoding"),
    };

    /// <summary>fp8 e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN.</summary>
    public static float E4M3ToSingle(byte bits)
    {
        int sign = bits >> 7;
        int exponent = (bits >> 3) & 0xF;
        int mantissa = bits & 0x7;
        double magnitude = (exponent, mantissa) switch
        {
            (0xF, 0x7) => double.NaN,
            (0, _) => mantissa / 8.0 * Math.Pow(2, -6),
            _ => (1 + (mantissa / 8.0)) * Math.Pow(2, exponent - 7),
        };
        return (float)(sign == 1 ? -magnitude : magnitude);
    }

    /// <summary>IEEE binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.</summary>
    public static float HalfBitsToSingle(ushort bits)
    {
        int sign = bits >> 15;
        int exponent = (bits >> 10) & 0x1F;
        int mantissa = bits & 0x3FF;
        double magnitude = exponent switch
        {
            0 => mantissa * Math.Pow(2, -24),                                   // zero and subnormals
            0x1F => mantissa == 0 ? double.PositiveInfinity : double.NaN,
            _ => (1 + (mantissa / 1024.0)) * Math.Pow(2, exponent - 15),
        };
        return (float)(sign == 1 ? -magnitude : magnitude);
    }
}
