using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux tiny-model</c>, <c>flux info</c> and usage errors.</summary>
public sealed class CommandTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Tiny_model_writes_a_checkpoint_and_says_where()
    {
        string path = temp.File("tiny.safetensors");

        CliResult result = CliRunner.Run("tiny-model", "--kind", "flux", "--variant", "schnell", "--dtype", "bf16", "--seed", "5", "-o", path);

        Assert.Equal(0, result.ExitCode);
        Assert.True(File.Exists(path));
        Assert.Contains(path, result.Output);
        Assert.Contains("schnell", result.Output);
        using Checkpoint checkpoint = Checkpoint.Open(path);
        Assert.Equal("schnell", checkpoint.Describe().Variant);
    }

    [Fact]
    public void Tiny_model_writes_sharded_diffusers_folders()
    {
        string folder = temp.File("t5");

        CliResult result = CliRunner.Run("tiny-model", "--kind", "t5", "--shards", "2", "-o", folder);

        Assert.Equal(0, result.ExitCode);
        Assert.True(File.Exists(Path.Combine(folder, "config.json")));
        Assert.Equal(2, Directory.GetFiles(folder, "*.safetensors").Length);
        Assert.Single(Directory.GetFiles(folder, "*.safetensors.index.json"));
    }

    [Theory]
    [InlineData("inspect", "a", "--no-such-option")]
    [InlineData("no-such-command")]
    [InlineData]
    public void Bad_usage_is_exit_code_2_with_a_hint(params string[] args)
    {
        CliResult result = CliRunner.Run(args);

        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith("flux: ", result.Error);
        Assert.Matches(@"Run 'flux( [a-z-]+)? --help' for usage\.", result.ErrorLines[^1]);
        Assert.All(result.ErrorLines[..^1], line => Assert.StartsWith("flux: ", line));
    }

    [Theory]
    [InlineData("flux: --kind: Argument 'unet' not recognized. Must be one of: 'flux' 'ae' 't5' 'clip'", "tiny-model", "--kind", "unet", "-o", "x")]
    [InlineData("flux: --dtype: Argument 'f64' not recognized.", "tiny-model", "--dtype", "f64", "-o", "x")]
    [InlineData("flux: --shards must be between 1 and 10000 (got 0).", "tiny-model", "--shards", "0", "-o", "x")]
    [InlineData("flux: --seed must be an integer, not 'abc'.", "tiny-model", "--seed", "abc", "-o", "x")]
    [InlineData("flux: Option '--output' is required.", "tiny-model", "--kind", "flux")]
    [InlineData("flux: --threads must be between 0 and 4096 (got -1).", "forward", "--model", "m", "--inputs", "i", "--out", "o", "--threads", "-1")]
    [InlineData("flux: --repeat must be between 1 and 1000000 (got 0).", "forward", "--model", "m", "--inputs", "i", "--out", "o", "--repeat", "0")]
    public void A_bad_value_is_one_line_naming_the_option_and_exit_code_2(string message, params string[] args)
    {
        CliResult result = CliRunner.Run(args);

        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith(message, Assert.Single(result.ErrorLines));
        Assert.DoesNotContain("System.", result.Error);
    }

    [Fact]
    public void Version_is_the_native_library_s_version_and_this_flux_s()
    {
        FluxNativeDiagnostics library = FluxNativeLibrary.Diagnose();

        CliResult result = CliRunner.Run("--version");

        Assert.Equal(0, result.ExitCode);
        string line = Assert.Single(result.OutputLines);
        Assert.StartsWith($"{library.Version} (flux {library.Version}", line);   // the assemblies take the library's version
        Assert.Contains($"libfluxnative {library.Version}, ABI {library.AbiVersion})", line);
        Assert.Equal(string.Empty, result.Error);
    }

    [Fact]
    public void Info_json_is_one_object_on_standard_output()
    {
        CliResult result = CliRunner.Run("info", "--json");

        Assert.Equal(0, result.ExitCode);
        using var document = System.Text.Json.JsonDocument.Parse(result.Output);
        System.Text.Json.JsonElement info = document.RootElement;
        Assert.True(info.GetProperty("loaded").GetBoolean());
        Assert.Equal(FluxNativeLibrary.Diagnose().Version, info.GetProperty("version").GetString());
        Assert.Equal((int)FluxNativeLibrary.AbiVersion, info.GetProperty("abi_version").GetInt32());
        Assert.Contains("libfluxnative.so", info.GetProperty("library").GetString());
        Assert.True(info.GetProperty("probes").GetArrayLength() >= 1);
        // One entry per GPU the library sees, each with its name and memory (none on a machine without one).
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        if (diagnostics.Backends.HasFlag(FluxBackends.Cuda))
        {
            System.Text.Json.JsonElement gpus = info.GetProperty("cuda").GetProperty("gpus");
            Assert.Equal(diagnostics.CudaDeviceCount, gpus.GetArrayLength());
            foreach (System.Text.Json.JsonElement gpu in gpus.EnumerateArray())
            {
                Assert.False(string.IsNullOrEmpty(gpu.GetProperty("name").GetString()));
                Assert.True(gpu.GetProperty("total_memory_bytes").GetUInt64() > 0);
            }
        }
    }

    [Fact]
    public void A_native_refusal_of_the_options_is_exit_code_2()
    {
        // Valid on the command line, refused by the library: the BFL layout has one file.
        CliResult result = CliRunner.Run("tiny-model", "--layout", "bfl", "--shards", "2", "-o", temp.File("x.safetensors"));

        Assert.Equal(2, result.ExitCode);
        string line = Assert.Single(result.ErrorLines);
        Assert.Contains("shards", line);
    }

    [Fact]
    public void Help_is_exit_code_0()
    {
        CliResult result = CliRunner.Run("--help");

        Assert.Equal(0, result.ExitCode);
        Assert.Contains("inspect", result.Output);
        Assert.Contains("tiny-model", result.Output);
        Assert.Contains("info", result.Output);
    }

    [Fact]
    public void Info_shows_the_loaded_library_and_what_was_probed()
    {
        CliResult result = CliRunner.Run("info");

        Assert.Equal(0, result.ExitCode);
        Assert.Contains($"ABI          {FluxNativeLibrary.AbiVersion}", result.Output);
        Assert.Contains("libfluxnative.so", result.Output);
        Assert.Contains("backends     Cpu", result.Output);
        Assert.Contains(": loaded", result.Output);
    }

    [Fact]
    public void A_library_with_another_ABI_is_refused_by_name_and_version()
    {
        string fixture = RepoPaths.AbiMismatchLibrary;
        Assert.True(File.Exists(fixture), $"The ABI-mismatch fixture is not built: {fixture}.");

        CliResult result = CliRunner.RunProcess(new Dictionary<string, string> { ["FLUXNATIVE_LIBRARY"] = fixture }, "info");

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"has ABI version {FluxNativeLibrary.AbiVersion + 1000}, this FluxNative.Interop needs {FluxNativeLibrary.AbiVersion}", result.Output);
    }

    [Fact]
    public void A_missing_library_fails_the_first_native_call_with_one_line_and_exit_code_1()
    {
        string missing = temp.File("libfluxnative.so");

        CliResult result = CliRunner.RunProcess(
            new Dictionary<string, string> { ["FLUXNATIVE_LIBRARY"] = missing }, "inspect", temp.File("model.safetensors"));

        Assert.Equal(1, result.ExitCode);
        string line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("flux: Cannot load libfluxnative from " + missing, line);
        Assert.DoesNotContain("   at ", result.Error);
    }
}
