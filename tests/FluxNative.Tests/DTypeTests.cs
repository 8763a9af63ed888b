using FluxNative.Interop;

namespace FluxNative.Tests;

/// <summary>The managed dtype table agrees with the native one.</summary>
public class DTypeTests
{
    public static TheoryData<DType> All() => new(Enum.GetValues<DType>());

    [Theory]
    [MemberData(nameof(All))]
    public unsafe void Names_and_sizes_match_the_native_library(DType dtype)
    {
        Assert.Equal(NativeStatus.Utf8(NativeMethods.fx_dtype_name((int)dtype)), dtype.SafetensorsName());
        Assert.Equal((nuint)dtype.ElementSize(), NativeMethods.fx_dtype_size((int)dtype));
    }

    [Theory]
    [MemberData(nameof(All))]
    public void Every_dtype_parses_from_its_safetensors_name(DType dtype)
    {
        Assert.True(DTypeExtensions.TryParse(dtype.SafetensorsName(), out DType parsed));
        Assert.Equal(dtype, parsed);
    }

    [Theory]
    [InlineData("bf16", DType.BF16)]
    [InlineData("fp16", DType.F16)]
    [InlineData("f32", DType.F32)]
    [InlineData("F8_E4M3", DType.F8E4M3)]
    public void Common_spellings_parse(string text, DType expected)
    {
        Assert.True(DTypeExtensions.TryParse(text, out DType parsed));
        Assert.Equal(expected, parsed);
    }

    [Fact]
    public void The_enum_covers_every_native_dtype()
    {
        // FX_DTYPE_COUNT_ is one past the last value.
        Assert.Equal(15, Enum.GetValues<DType>().Length);
        unsafe
        {
            Assert.Equal("?", NativeStatus.Utf8(NativeMethods.fx_dtype_name(15)));
        }
    }
}
