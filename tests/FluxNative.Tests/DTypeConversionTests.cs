namespace FluxNative.Tests;

/// <summary>Buffer conversions through fx_convert, checked against hand decodings and the published limits.</summary>
public class DTypeConversionTests
{
    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F8E4M3)]
    [InlineData(DType.F8E5M2)]
    public void Converting_to_float32_matches_the_hand_decoding(DType dtype)
    {
        // Every 8-bit code, and a spread of 16-bit ones.
        byte[] raw = dtype.ElementSize() == 1
            ? Enumerable.Range(0, 256).Select(i => (byte)i).ToArray()
            : Enumerable.Range(0, 4096).SelectMany(i => BitConverter.GetBytes((ushort)(i * 16 + 3))).ToArray();

        Assert.Equal(HandConversions.Decode(raw, dtype), DTypeConversion.ToFloat32(dtype, raw));
    }

    [Fact]
    public void Rounding_to_bf16_is_to_nearest_even()
    {
        // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go to the even mantissa, 1.
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        float[] values = [1 + MathF.Pow(2, -8), 1 + (3 * MathF.Pow(2, -8))];

        float[] rounded = DTypeConversion.ToFloat32(DType.BF16, DTypeConversion.FromFloat32(values, DType.BF16));

        Assert.Equal([1f, 1 + MathF.Pow(2, -6)], rounded);
    }

    [Theory]
    [InlineData(DType.F8E4M3, OverflowMode.Saturate, 448f)]
    [InlineData(DType.F8E4M3, OverflowMode.Ieee, float.NaN)]
    [InlineData(DType.F8E5M2, OverflowMode.Saturate, 57344f)]
    [InlineData(DType.F8E5M2, OverflowMode.Ieee, float.PositiveInfinity)]
    public void Overflow_to_fp8_follows_the_mode(DType dtype, OverflowMode mode, float expected)
    {
        byte[] fp8 = DTypeConversion.FromFloat32([1e6f], dtype, mode);

        Assert.Equal(expected, DTypeConversion.ToFloat32(dtype, fp8)[0]);
    }

    [Fact]
    public void Buffers_that_do_not_fit_are_argument_errors()
    {
        Assert.Throws<ArgumentException>(() => DTypeConversion.Convert(DType.F32, new byte[6], DType.BF16, new byte[4]));
        Assert.Throws<ArgumentException>(() => DTypeConversion.Convert(DType.F32, new byte[8], DType.BF16, new byte[3]));

        byte[] shared = new byte[16];
        Assert.Throws<ArgumentException>(() => DTypeConversion.Convert(DType.BF16, shared.AsSpan(0, 8), DType.F32, shared.AsSpan(4, 12)));
    }

    [Fact]
    public void Integer_dtypes_are_refused_by_the_library()
    {
        var exception = Assert.Throws<FluxNativeException>(() => DTypeConversion.Convert(DType.I32, new byte[8], DType.F32, new byte[8]));

        Assert.NotEqual(FluxStatus.Ok, exception.Code);
    }
}
