using System.Reflection;
using System.Text.RegularExpressions;
using FluxNative.Testing;

namespace FluxNative.Interop.Tests;

/// <summary>The binding mirrors the header it was written against: version, functions, enums, constants.</summary>
public partial class HeaderTests
{
    private static readonly string Header = File.ReadAllText(RepoPaths.Header);

    [Fact]
    public void The_ABI_constant_matches_the_header()
    {
        Match match = Regex.Match(Header, @"#define\s+FX_ABI_VERSION\s+(\d+)u?\b");
        Assert.True(match.Success, "no #define FX_ABI_VERSION in fluxnative.h");

        uint inHeader = uint.Parse(match.Groups[1].Value);
        Assert.True(inHeader == FluxNativeLibrary.AbiVersion,
            $"fluxnative.h has FX_ABI_VERSION {inHeader}; FluxNativeLibrary.AbiVersion is {FluxNativeLibrary.AbiVersion}.");
    }

    [Fact]
    public void The_loaded_library_has_the_ABI_version_of_the_binding()
    {
        Assert.Equal(FluxNativeLibrary.AbiVersion, NativeMethods.fx_abi_version());
    }

    [Fact]
    public void Every_header_function_is_declared()
    {
        var declared = typeof(NativeMethods)
            .GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Select(m => m.Name)
            .Where(name => name.StartsWith("fx_", StringComparison.Ordinal))
            .ToHashSet();
        var inHeader = FunctionDeclaration().Matches(Header).Select(m => m.Groups[1].Value).ToList();

        Assert.NotEmpty(inHeader);
        var undeclared = inHeader.Where(name => !declared.Contains(name)).ToList();
        var notInHeader = declared.Where(name => !inHeader.Contains(name)).ToList();
        Assert.True(undeclared.Count == 0, $"In fluxnative.h but not in NativeMethods: {string.Join(", ", undeclared)}");
        Assert.True(notInHeader.Count == 0, $"In NativeMethods but not in fluxnative.h: {string.Join(", ", notInHeader)}");
    }

    [Fact]
    public void Status_values_match_the_header()
    {
        var values = Defines(@"(FX_OK|FX_ERR_\w+)\s*=\s*(\d+)");
        Assert.Equal(Enum.GetValues<FluxStatus>().Length, values.Count);
        Assert.Equal(0, values["FX_OK"]);
        Assert.Equal((long)FluxStatus.InvalidArgument, values["FX_ERR_INVALID_ARGUMENT"]);
        Assert.Equal((long)FluxStatus.OutOfMemory, values["FX_ERR_OUT_OF_MEMORY"]);
        Assert.Equal((long)FluxStatus.Io, values["FX_ERR_IO"]);
        Assert.Equal((long)FluxStatus.Format, values["FX_ERR_FORMAT"]);
        Assert.Equal((long)FluxStatus.NotFound, values["FX_ERR_NOT_FOUND"]);
        Assert.Equal((long)FluxStatus.Unsupported, values["FX_ERR_UNSUPPORTED"]);
        Assert.Equal((long)FluxStatus.BufferTooSmall, values["FX_ERR_BUFFER_TOO_SMALL"]);
        Assert.Equal((long)FluxStatus.Cancelled, values["FX_ERR_CANCELLED"]);
        Assert.Equal((long)FluxStatus.Backend, values["FX_ERR_BACKEND"]);
        Assert.Equal((long)FluxStatus.Internal, values["FX_ERR_INTERNAL"]);
    }

    [Fact]
    public void Flag_and_size_constants_match_the_header()
    {
        var defines = Defines(@"#define\s+(FX_\w+)\s+(\d+)u?\b");

        Assert.Equal(NativeMethods.MaxDims, defines["FX_MAX_DIMS"]);
        Assert.Equal(NativeMethods.MaxParametersBytes, defines["FX_IMAGE_MAX_PARAMETERS_BYTES"]);
        Assert.Equal((long)FluxBackends.Cpu, defines["FX_BACKEND_CPU"]);
        Assert.Equal((long)FluxBackends.Cuda, defines["FX_BACKEND_CUDA"]);
        Assert.Equal((long)CpuFeatures.Avx2, defines["FX_CPU_AVX2"]);
        Assert.Equal((long)CpuFeatures.Fma, defines["FX_CPU_FMA"]);
        Assert.Equal((long)CpuFeatures.F16c, defines["FX_CPU_F16C"]);
        Assert.Equal((long)CpuFeatures.Avx512F, defines["FX_CPU_AVX512F"]);
        Assert.Equal((long)CpuFeatures.Avx512BW, defines["FX_CPU_AVX512BW"]);
        Assert.Equal((long)CpuFeatures.Avx512VL, defines["FX_CPU_AVX512VL"]);
        Assert.Equal((long)CpuFeatures.Avx512Bf16, defines["FX_CPU_AVX512_BF16"]);
        Assert.Equal((long)CpuFeatures.Avx512Fp16, defines["FX_CPU_AVX512_FP16"]);
    }

    private static Dictionary<string, long> Defines(string pattern) =>
        Regex.Matches(Header, pattern).ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value));

    // "FX_API <return type> fx_name(" — the return type may span words and stars.
    [GeneratedRegex(@"FX_API\s+[\w\s\*]*?\b(fx_\w+)\s*\(")]
    private static partial Regex FunctionDeclaration();
}
