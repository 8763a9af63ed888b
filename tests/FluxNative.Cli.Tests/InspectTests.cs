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

    [Fact]
    public void Inspect_describes_a_whole_diffusers_folder_part_by_part()
    {
        string root = temp.File("FLUX.1-tiny");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "model_index.json"), """{"_class_name": "FluxPipeline"}""");
        foreach ((string kind, string folder) in new[] { ("flux", "transformer"), ("ae", "vae"), ("clip", "text_encoder"), ("t5", "text_encoder_2") })
        {
            Assert.Equal(0, CliRunner.Run("tiny-model", "--kind", kind, "--layout", "diffusers", "-o", Path.Combine(root, folder)).ExitCode);
        }

        Directory.CreateDirectory(Path.Combine(root, "tokenizer"));

        CliResult text = CliRunner.Run("inspect", root);
        CliResult json = CliRunner.Run("inspect", root, "--json");

        Assert.True(text.ExitCode == 0, text.Error);
        Assert.Contains("model       FLUX.1 [dev], diffusers folder", text.Output);
        Assert.Matches(@"parameters  [0-9.]+ M in 4 part\(s\)", text.Output);
        Assert.Matches(@"transformer/\s+FLUX transformer \(dev\), ", text.Output);
        Assert.Matches(@"vae/\s+autoencoder \(VAE\), ", text.Output);
        Assert.Matches(@"text_encoder/\s+CLIP text encoder, ", text.Output);
        Assert.Matches(@"text_encoder_2/\s+T5 text encoder, ", text.Output);
        Assert.Contains("tokenizers  tokenizer/ (CLIP)", text.Output);
        Assert.Contains("missing     none", text.Output);
        Assert.Contains(Path.Combine(root, "text_encoder_2") + "\n", text.Output);   // each part's full description follows

        Assert.True(json.ExitCode == 0, json.Error);
        using JsonDocument document = JsonDocument.Parse(json.Output);
        JsonElement parts = document.RootElement.GetProperty("parts");
        Assert.Equal("diffusers", document.RootElement.GetProperty("layout").GetString());
        Assert.Equal(["transformer", "vae", "text_encoder", "text_encoder_2"], parts.EnumerateObject().Select(p => p.Name));
        Assert.Equal("t5_encoder", parts.GetProperty("text_encoder_2").GetProperty("kind").GetString());
        Assert.Equal(parts.EnumerateObject().Sum(p => p.Value.GetProperty("parameter_count").GetInt64()),
            document.RootElement.GetProperty("parameter_count").GetInt64());
    }

    [Fact]
    public void Inspect_names_the_parts_a_diffusers_folder_lacks()
    {
        string root = temp.File("partial");
        Assert.Equal(0, CliRunner.Run("tiny-model", "--kind", "flux", "--layout", "diffusers", "--variant", "schnell", "-o", Path.Combine(root, "transformer")).ExitCode);

        CliResult result = CliRunner.Run("inspect", root);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("FLUX.1 [schnell], diffusers folder", result.Output);
        Assert.Contains("missing     vae/, text_encoder/, text_encoder_2/", result.Output);
    }

    [Fact]
    public void Inspect_describes_a_folder_of_bfl_files()
    {
        string root = temp.File("bfl");
        Directory.CreateDirectory(root);
        Assert.Equal(0, CliRunner.Run("tiny-model", "--kind", "flux", "--variant", "schnell", "-o", Path.Combine(root, "flux1-schnell.safetensors")).ExitCode);
        Assert.Equal(0, CliRunner.Run("tiny-model", "--kind", "ae", "-o", Path.Combine(root, "ae.safetensors")).ExitCode);

        CliResult text = CliRunner.Run("inspect", root);
        CliResult tensors = CliRunner.Run("inspect", root, "--json", "--tensors");

        Assert.True(text.ExitCode == 0, text.Error);
        Assert.Contains("FLUX.1 [schnell], folder of BFL files", text.Output);
        Assert.Matches(@"ae\.safetensors\s+autoencoder \(VAE\)", text.Output);
        Assert.Matches(@"flux1-schnell\.safetensors\s+FLUX transformer \(schnell\)", text.Output);
        Assert.DoesNotContain("missing", text.Output);
        using JsonDocument document = JsonDocument.Parse(tensors.Output);
        Assert.Equal("bfl", document.RootElement.GetProperty("layout").GetString());
        JsonElement ae = document.RootElement.GetProperty("parts").GetProperty("ae.safetensors");
        Assert.Equal(ae.GetProperty("tensor_count").GetInt32(), ae.GetProperty("tensors").GetArrayLength());
    }

    [Fact]
    public void A_component_folder_is_still_one_checkpoint()
    {
        string path = TinyModel("flux", "diffusers");

        CliResult result = CliRunner.Run("inspect", path, "--json");

        using JsonDocument document = JsonDocument.Parse(result.Output);
        Assert.Equal("flux_transformer", document.RootElement.GetProperty("kind").GetString());
    }

    [Fact]
    public void Inspect_lists_the_components_of_an_all_in_one_file()
    {
        // ComfyUI's "all in one" layout: the transformer under model.diffusion_model., the VAE under vae.
        string flux = TinyModel("flux", "bfl");
        string ae = TinyModel("ae", "bfl");
        var writer = new SafetensorsWriter();
        int count = 0;
        foreach ((string file, string prefix) in new[] { (flux, "model.diffusion_model."), (ae, "vae.") })
        {
            using Checkpoint part = Checkpoint.Open(file);
            foreach ((string key, string value) in part.Describe().Metadata)
            {
                writer.Metadata[key] = value;
            }

            foreach (TensorInfo tensor in part.Tensors)
            {
                writer.Add(prefix + tensor.Name, part.ReadFloat32(tensor.Name), tensor.Shape.ToArray());
                count++;
            }
        }

        string path = temp.File("all-in-one.safetensors");
        writer.Write(path);

        CliResult result = CliRunner.Run("inspect", path);

        Assert.True(result.ExitCode == 0, result.Error);
        // Described by its largest part (the tiny VAE has more tensors than the tiny transformer), every part listed.
        Assert.True(result.Output.Contains("autoencoder (VAE)", StringComparison.Ordinal), result.Output);
        Assert.Contains("names prefixed 'vae.'", result.Output);
        Assert.Matches(@"components\s+autoencoder 'vae\.' x\d+, flux_transformer 'model\.diffusion_model\.' x\d+", result.Output);
        Assert.Contains("problems    none", result.Output);
        Assert.True(count > 0);
    }

    private string TinyModel(string kind, string layout, params string[] extra)
    {
        string path = temp.File(layout == "bfl" ? $"{kind}-{Guid.NewGuid():N}.safetensors" : $"{kind}-{Guid.NewGuid():N}");
        CliResult result = CliRunner.Run(["tiny-model", "--kind", kind, "--layout", layout, "-o", path, .. extra]);
        Assert.True(result.ExitCode == 0, result.Error);
        return path;
    }
}
