using System.Text.Json;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux inspect</c> on tiny checkpoints of every kind, and on bad input.</summary>
public sealed class InspectTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, string, string, string> Kinds() => new()
    {
        // kind, layout, expected model line, expected JSON kind
        { "flux", "bfl", "FLUX transformer (dev)", "flux_transformer" },
        { "flux", "diffusers", "FLUX transformer (dev)", "flux_transformer" },
        { "ae", "bfl", "autoencoder (VAE)", "autoencoder" },
        { "ae", "diffusers", "autoencoder (VAE)", "autoencoder" },
        { "t5", "diffusers", "T5 text encoder", "t5_encoder" },
        { "clip", "diffusers", "CLIP text encoder", "clip_text" },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Inspect_says_what_a_tiny_checkpoint_is(string kind, string layout, string model, string jsonKind)
    {
        string path = TinyModel(kind, layout);

        CliResult text = CliRunner.Run("inspect", path);
        CliResult json = CliRunner.Run("inspect", path, "--json");

        Assert.Equal(0, text.ExitCode);
        Assert.Equal(string.Empty, text.Error);
        Assert.Contains($"model       {model}", text.Output);
        Assert.Contains("parameters  ", text.Output);
        Assert.Contains("problems    none", text.Output);
        Assert.Contains("  config", text.Output);

        Assert.Equal(0, json.ExitCode);
        using JsonDocument document = JsonDocument.Parse(json.Output);
        Assert.Equal(jsonKind, document.RootElement.GetProperty("kind").GetString());
        Assert.True(document.RootElement.GetProperty("parameter_count").GetInt64() > 0);
    }

    [Fact]
    public void Inspect_prints_the_configuration_and_dtypes()
    {
        string path = TinyModel("flux", "bfl", "--variant", "schnell", "--dtype", "f16");

        CliResult result = CliRunner.Run("inspect", path);

        Assert.Equal(0, result.ExitCode);
        Assert.Contains("FLUX transformer (schnell)", result.Output);
        Assert.Matches(@"hidden_size\s+64", result.Output);
        Assert.Matches(@"guidance_embed\s+false", result.Output);
        Assert.Contains("F16 x", result.Output);
        Assert.Contains($"file        {path}", result.Output);
    }

    [Fact]
    public void Inspect_lists_tensors_with_dtype_and_shape()
    {
        string path = TinyModel("flux", "bfl", "--dtype", "bf16");

        CliResult result = CliRunner.Run("inspect", path, "--tensors");

        Assert.Equal(0, result.ExitCode);
        Assert.Matches(@"img_in\.weight\s+BF16\s+\[64, 64\]", result.Output);
    }

    [Fact]
    public void Inspect_json_with_tensors_adds_a_tensor_list()
    {
        string path = TinyModel("ae", "bfl");

        CliResult result = CliRunner.Run("inspect", path, "--json", "--tensors");

        using JsonDocument document = JsonDocument.Parse(result.Output);
        JsonElement tensors = document.RootElement.GetProperty("tensors");
        Assert.Equal(document.RootElement.GetProperty("tensor_count").GetInt32(), tensors.GetArrayLength());
        Assert.All(tensors.EnumerateArray(), t => Assert.Equal(JsonValueKind.Array, t.GetProperty("shape").ValueKind));
    }

    [Fact]
    public void A_path_that_does_not_exist_is_one_line_on_stderr_and_exit_code_2()
    {
        string missing = temp.File("missing.safetensors");

        CliResult result = CliRunner.Run("inspect", missing);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal(string.Empty, result.Output);
        string line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("flux: ", line);
        Assert.Contains(missing, line);
    }

    [Fact]
    public void A_corrupt_file_is_one_line_on_stderr_naming_it_and_exit_code_2()
    {
        string path = TinyModel("flux", "bfl");
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(stream.Length / 2);
        }

        CliResult result = CliRunner.Run("inspect", path);

        Assert.Equal(2, result.ExitCode);
        string line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("flux: ", line);
        Assert.Contains(path, line);
        Assert.DoesNotContain("   at ", result.Error);
    }

    [Fact]
    public void A_file_that_is_not_safetensors_is_exit_code_2()
    {
        string path = temp.File("notes.safetensors");
        File.WriteAllText(path, "just some text, not a checkpoint");

        CliResult result = CliRunner.Run("inspect", path);

        Assert.Equal(2, result.ExitCode);
        Assert.Single(result.ErrorLines);
    }

    [Fact]
    public void Inspect_without_a_path_is_bad_usage()
    {
        CliResult result = CliRunner.Run("inspect");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("flux inspect --help", result.Error);
    }

    private string TinyModel(string kind, string layout, params string[] extra)
    {
        string path = temp.File(layout == "bfl" ? $"{kind}-{Guid.NewGuid():N}.safetensors" : $"{kind}-{Guid.NewGuid():N}");
        CliResult result = CliRunner.Run(["tiny-model", "--kind", kind, "--layout", layout, "-o", path, .. extra]);
        Assert.True(result.ExitCode == 0, result.Error);
        return path;
    }
}
