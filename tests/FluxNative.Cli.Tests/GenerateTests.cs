using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux generate</c>: the demo, given latents and embeddings, file naming, and one-line errors.</summary>
public sealed class GenerateTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Demo_writes_an_image_and_prints_seed_and_timings()
    {
        string output = temp.File("demo.png");
        CliResult result = CliRunner.Run("generate", "--demo", "a red fox in the snow", "--image-size", "128", "--steps", "3", "--seed", "11", "-o", output);

        Assert.True(result.ExitCode == 0, result.Error);
        // Standard output is the result, the file written; the rest is for people, on standard error.
        Assert.Equal([output], result.OutputLines);
        Assert.Contains("random weights", result.Error);
        Assert.Contains("prompt   \"a red fox in the snow\" (CLIP 77 tokens, T5 64 tokens)", result.Error);
        Assert.Contains("request  128x128, 3 steps, guidance 3.5, seed 11, 1 image(s), png", result.Error);
        Assert.Contains("denoising  3/3 [", result.Error);
        Assert.Contains("seed     11", result.Error);
        Assert.Contains("timings  prepare", result.Error);
        RgbImage image = Images.Decode(File.ReadAllBytes(output), out ImageFormat format);
        Assert.Equal((ImageFormat.Png, 128, 128), (format, image.Width, image.Height));

        // Same prompt and seed, same file.
        string again = temp.File("again.png");
        Assert.Equal(0, CliRunner.Run("generate", "--demo", "a red fox in the snow", "--image-size", "128", "--steps", "3", "--seed", "11", "-o", again).ExitCode);
        Assert.Equal(File.ReadAllBytes(output), File.ReadAllBytes(again));
    }

    [Fact]
    public void Image_to_image_takes_the_size_of_the_image_and_reports_the_steps_that_run()
    {
        // A 96x64 input, written with the project's own encoder: the output is 96x64 without a size option.
        var rgb = new byte[96 * 64 * 3];
        for (int i = 0; i < rgb.Length; i++)
        {
            rgb[i] = (byte)(i % 251);
        }

        string input = temp.File("input.png");
        File.WriteAllBytes(input, Images.Encode(rgb, 96, 64, ImageFormat.Png));
        string output = temp.File("edited.png");
        CliResult result = CliRunner.Run("generate", "--demo", "a fox", "--image", input, "--strength", "0.5", "--steps", "6", "--seed", "3", "-o", output, "--json");

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains($"image    {input}, strength 0.5: steps 4-6 of 6 run", result.Error);
        Assert.Contains("denoising  3/3 [", result.Error);
        RgbImage image = Images.Decode(File.ReadAllBytes(output), out _);
        Assert.Equal((96, 64), (image.Width, image.Height));
        System.Text.Json.JsonElement json = System.Text.Json.JsonDocument.Parse(result.Output).RootElement;
        Assert.Equal(0.5, json.GetProperty("strength").GetDouble());
        Assert.Equal(3, json.GetProperty("start_step").GetInt32());

        // Another strength, another picture; an explicit size resizes the input.
        string other = temp.File("other.png");
        Assert.Equal(0, CliRunner.Run("generate", "--demo", "a fox", "--image", input, "--strength", "0.9", "--steps", "6", "--seed", "3", "-o", other).ExitCode);
        Assert.NotEqual(File.ReadAllBytes(output), File.ReadAllBytes(other));
        CliResult resized = CliRunner.Run("generate", "--demo", "a fox", "--image", input, "--width", "64", "--height", "64", "--steps", "2", "-o", temp.File("square.png"));
        Assert.True(resized.ExitCode == 0, resized.Error);
        Assert.Contains("The input image (96x64) is resized to 64x64.", resized.Error);
    }

    [Theory]
    [InlineData("--strength 0.5", "--strength applies to image-to-image: give --image with it.")]
    [InlineData("--image IMAGE --strength 0", "--strength must be greater than 0")]
    [InlineData("--image IMAGE --strength 1.5", "--strength")]
    [InlineData("--image NOTIMAGE", "--image")]
    public void Image_to_image_mistakes_are_one_line_errors(string options, string expected)
    {
        File.WriteAllBytes(temp.File("in.png"), Images.Encode(new byte[64 * 64 * 3], 64, 64, ImageFormat.Png));
        File.WriteAllText(temp.File("not.png"), "not an image");
        string[] args = ["generate", "--demo", "x", "--steps", "1", "-o", temp.File("o.png"),
            .. options.Replace("NOTIMAGE", temp.File("not.png"), StringComparison.Ordinal).Replace("IMAGE", temp.File("in.png"), StringComparison.Ordinal).Split(' ')];
        CliResult result = CliRunner.Run(args);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.Trim().Split('\n'));
        Assert.False(File.Exists(temp.File("o.png")));
    }

    [Fact]
    public void Several_images_are_numbered_and_the_format_follows_the_extension()
    {
        string output = temp.File("out.webp");
        CliResult result = CliRunner.Run("generate", "--demo", "--aspect-ratio", "16:9", "--image-size", "128", "--steps", "2", "-n", "2", "--seed", "5", "-o", output);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("seed     5 (image k: 5 + k)", result.Error);
        Assert.Equal([temp.File("out-1.webp"), temp.File("out-2.webp")], result.OutputLines);
        foreach (string name in new[] { "out-1.webp", "out-2.webp" })
        {
            RgbImage image = Images.Decode(File.ReadAllBytes(temp.File(name)), out ImageFormat format);
            Assert.Equal((ImageFormat.Webp, 128, 80), (format, image.Width, image.Height));   // 72 = 4.5 x 16 -> 80 (halves up)
        }

        Assert.False(File.Exists(output));
    }

    [Fact]
    public void Given_latents_and_embeddings_replace_noise_and_encoders_and_final_latents_are_saved()
    {
        // The demo's models, with inputs written by hand: [1, 16, 8, 8] latents (64x64 pixels), txt [1, 5, 32], y [1, 32].
        FluxPipelineSources sources = DemoModels.Write(temp.File("models"));
        float[] latents = LatentNoise.Generate(9, 1, 16, 8, 8);
        new SafetensorsWriter().Add("latents", latents, 1, 16, 8, 8).Write(temp.File("latents.safetensors"));
        new SafetensorsWriter()
            .Add("txt", LatentNoise.Generate(1, 1, 5, 1, 32), 1, 5, 32)
            .Add("y", LatentNoise.Generate(2, 1, 32, 1, 1), 1, 32)
            .Write(temp.File("embeds.safetensors"));

        string[] args =
        [
            "generate", "--transformer", sources.Transformer!, "--ae", sources.Autoencoder!, "--width", "256", "--height", "256", "--steps", "2",
            "--latents", temp.File("latents.safetensors"), "--prompt-embeds", temp.File("embeds.safetensors"),
        ];
        // 256x256 needs a [1, 16, 32, 32] latent: the shape error names the tensor and the expected shape.
        CliResult wrongSize = CliRunner.Run([.. args, "-o", temp.File("x.png")]);
        Assert.Equal(ExitCodes.BadInput, wrongSize.ExitCode);
        Assert.Contains("[1, 16, 32, 32]", wrongSize.Error);

        float[] big = LatentNoise.Generate(9, 1, 16, 32, 32);
        new SafetensorsWriter().Add("latents", big, 1, 16, 32, 32).Write(temp.File("latents.safetensors"));
        CliResult result = CliRunner.Run([.. args, "-o", temp.File("given.png"), "--save-latents", temp.File("final.safetensors")]);
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("seed     none (latents given)", result.Error);
        using Checkpoint saved = Checkpoint.Open(temp.File("final.safetensors"));
        Assert.Equal(new long[] { 1, 16, 32, 32 }, saved.Find("latents")!.Shape);
        Assert.NotEqual(big, saved.ReadFloat32("latents"));
        Assert.True(File.Exists(temp.File("given.png")));
    }

    [Theory]
    [InlineData("a_prompt_but_no_embeddings", "no text encoders")]
    [InlineData("--steps 60", "--steps must be between 1 and 50 (got 60).")]
    [InlineData("--width 512", "Give both --width and --height")]
    [InlineData("--guidance 11", "--guidance must be between 0 and 10 (got 11).")]
    [InlineData("--clip CLIP", "needs both text encoders")]
    public void Bad_requests_fail_with_one_line_and_exit_code_2(string extra, string message)
    {
        FluxPipelineSources sources = DemoModels.Write(temp.File("models"));
        string[] args = ["generate", "--transformer", sources.Transformer!, "--ae", sources.Autoencoder!, .. extra.Replace("CLIP", sources.Clip!).Split(' ')];
        if (!extra.StartsWith("a_prompt", StringComparison.Ordinal))
        {
            args = [.. args, "--prompt-embeds", WriteEmbeddings()];
        }

        CliResult result = CliRunner.Run(args);
        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Contains(message, result.Error);
        Assert.Single(result.ErrorLines);
    }

    [Fact]
    public void Encode_writes_the_embeddings_generate_reads_and_they_give_the_same_image()
    {
        string embeds = temp.File("fox.safetensors");
        CliResult encoded = CliRunner.Run("encode", "--demo", "a red fox", "--max-length", "64", "-o", embeds);
        Assert.True(encoded.ExitCode == 0, encoded.Error);
        Assert.Equal([embeds], encoded.OutputLines);
        Assert.Contains("txt [1, 64, 32], y [1, 32]", encoded.Error);

        FluxPipelineSources sources = DemoModels.Write(temp.File("models"));
        string[] common = ["--width", "256", "--height", "256", "--steps", "2", "--seed", "4"];
        CliResult fromText = CliRunner.Run(["generate", "--demo", "a red fox", .. common, "-o", temp.File("text.png")]);
        CliResult fromEmbeds = CliRunner.Run(["generate", "--transformer", sources.Transformer!, "--ae", sources.Autoencoder!, "--prompt-embeds", embeds,
            .. common, "-o", temp.File("embeds.png")]);
        Assert.True(fromText.ExitCode == 0, fromText.Error);
        Assert.True(fromEmbeds.ExitCode == 0, fromEmbeds.Error);
        // The pixels: the files' metadata differ (the prompt, against "(prompt embeddings)").
        Assert.Equal(Images.Decode(File.ReadAllBytes(temp.File("text.png")), out _).Rgb, Images.Decode(File.ReadAllBytes(temp.File("embeds.png")), out _).Rgb);
    }

    [Fact]
    public void A_diffusers_model_folder_runs_from_prompt_to_file()
    {
        // The published folder layout, with tiny models and the real tokenizers: transformer/, vae/, text_encoder/,
        // text_encoder_2/, tokenizer/, tokenizer_2/.
        string model = temp.File("FLUX.1-tiny");
        var diffusers = CheckpointLayout.Diffusers;
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.FluxTransformer, Layout = diffusers, Variant = FluxVariant.Schnell, Shards = 2, Seed = 1 }, Path.Combine(model, "transformer"));
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder, Layout = diffusers, Depth = 4, DepthSingle = 2, Seed = 1 }, Path.Combine(model, "vae"));
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.ClipText, Layout = diffusers, Seed = 1 }, Path.Combine(model, "text_encoder"));
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.T5Encoder, Layout = diffusers, Seed = 1 }, Path.Combine(model, "text_encoder_2"));
        foreach ((string from, string to) in new[] { ("clip", "tokenizer"), ("t5", "tokenizer_2") })
        {
            Directory.CreateDirectory(Path.Combine(model, to));
            foreach (string file in Directory.GetFiles(Path.Combine(DemoModels.TokenizerDirectory, from)))
            {
                File.Copy(file, Path.Combine(model, to, Path.GetFileName(file)));
            }
        }

        string output = temp.File("folder.jpg");
        CliResult result = CliRunner.Run("generate", "--model", model, "a castle on a hill", "--width", "256", "--height", "256", "--seed", "1", "-o", output);
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("model    schnell:", result.Error);
        Assert.Contains("256x256, 4 steps", result.Error);           // schnell's default steps
        Assert.Contains("T5 256 tokens", result.Error);                // schnell's T5 length (BFL)
        RgbImage image = Images.Decode(File.ReadAllBytes(output), out ImageFormat format);
        Assert.Equal((ImageFormat.Jpeg, 256, 256), (format, image.Width, image.Height));
    }

    [Fact]
    public void Files_carry_the_generation_parameters_unless_no_metadata()
    {
        string png = temp.File("fox.png"), jpeg = temp.File("fox.jpg"), bare = temp.File("bare.png");
        string[] common = ["--demo", "a red fox in the snow", "--image-size", "64", "--steps", "2", "--guidance", "2.5", "--seed", "31"];
        Assert.Equal(0, CliRunner.Run(["generate", .. common, "-o", png]).ExitCode);
        Assert.Equal(0, CliRunner.Run(["generate", .. common, "-o", jpeg]).ExitCode);
        CliResult off = CliRunner.Run(["generate", .. common, "--no-metadata", "-o", bare]);
        Assert.True(off.ExitCode == 0, off.Error);

        foreach (string file in new[] { png, jpeg })
        {
            (string prompt, Dictionary<string, string> pairs) = ImageMetadataReader.Split(ImageMetadataReader.Parameters(File.ReadAllBytes(file))!);
            Assert.Equal("a red fox in the snow", prompt);
            Assert.Equal(("31", "2", "2.5", "64x64"), (pairs["Seed"], pairs["Steps"], pairs["Guidance"], pairs["Size"]));
        }

        Assert.Null(ImageMetadataReader.Parameters(File.ReadAllBytes(bare)));
        Assert.Equal(Images.Decode(File.ReadAllBytes(png), out _).Rgb, Images.Decode(File.ReadAllBytes(bare), out _).Rgb);
    }

    [Fact]
    public void Model_is_required_unless_demo()
    {
        CliResult result = CliRunner.Run("generate", "a prompt");
        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.StartsWith("flux: No model given: pass --model DIR", result.ErrorLines[0]);
    }

    private string WriteEmbeddings()
    {
        string path = temp.File("embeds.safetensors");
        new SafetensorsWriter().Add("txt", new float[1 * 4 * 32], 1, 4, 32).Add("y", new float[32], 1, 32).Write(path);
        return path;
    }
}
