using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary>
/// <c>flux generate</c>'s options: every bad value is one line on standard error naming the option, exit code 2, before
/// anything loads; sizes from 64 up run with a warning outside the trained range; prompts cut short are warned about.
/// </summary>
public sealed class GenerateOptionTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>A transformer "file" that is not a checkpoint: a command that reached the loading would fail on it instead.</summary>
    private string Broken()
    {
        string path = temp.File("broken.safetensors");
        File.WriteAllText(path, "not a checkpoint");
        return path;
    }

    [Theory]
    [InlineData("--seed abc", "--seed must be an integer, not 'abc'.")]
    [InlineData("--seed 1.5", "--seed must be a whole number, not '1.5'.")]
    [InlineData("--seed -2", "--seed must be between -1 and 9223372036854775797 (got -2).")]
    [InlineData("--seed 99999999999999999999", "--seed must be between -1 and 9223372036854775797 (got 99999999999999999999).")]
    [InlineData("--threads -1", "--threads must be between 0 and 4096 (got -1).")]
    [InlineData("--device gpu", "--device must be cpu, cuda or cuda:N, not 'gpu'.")]
    [InlineData("--device cuda:x", "--device must be cpu, cuda or cuda:N, not 'cuda:x'.")]
    [InlineData("--threads many", "--threads must be an integer, not 'many'.")]
    [InlineData("--quality 0", "--quality must be between 1 and 100 (got 0).")]
    [InlineData("--quality 101", "--quality must be between 1 and 100 (got 101).")]
    [InlineData("--steps 0", "--steps must be between 1 and 50 (got 0).")]
    [InlineData("--guidance high", "--guidance must be a number, not 'high'.")]
    [InlineData("--guidance NaN", "--guidance must be between 0 and 10 (got NaN).")]
    [InlineData("-n 11", "--num-images must be between 1 and 10 (got 11).")]
    [InlineData("--max-length 0", "--max-length must be between 1 and 512 (got 0).")]
    [InlineData("--max-length 513", "--max-length must be between 1 and 512 (got 513).")]
    [InlineData("--width 32 --height 64", "--width must be between 64 and 16384 (got 32).")]
    [InlineData("--image-size 20000", "--image-size must be between 64 and 16384 (got 20000).")]
    [InlineData("--height 256", "Give both --width and --height, or neither (and --aspect-ratio and --image-size).")]
    [InlineData("--width 256 --height 256 --aspect-ratio 16:9", "Give either --width and --height, or --aspect-ratio and --image-size, not both.")]
    [InlineData("--aspect-ratio 5:2", "--aspect-ratio: Argument '5:2' not recognized.")]
    [InlineData("--format gif", "--format: Argument 'gif' not recognized.")]
    [InlineData("--progress fancy", "--progress: Argument 'fancy' not recognized.")]
    [InlineData("--speed-mode turbo", "--speed-mode: Argument 'turbo' not recognized.")]
    [InlineData("--cache-threshold -1", "--cache-threshold must be between 0 and 10 (got -1).")]
    public void A_bad_value_is_one_line_naming_the_option_before_anything_loads(string options, string message)
    {
        CliResult result = CliRunner.Run(["generate", "a fox", "--transformer", Broken(), "--ae", Broken(), .. options.Split(' ')]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        string line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("flux: " + message, line);
        Assert.DoesNotContain("System.", line);
        Assert.Equal(string.Empty, result.Output);
    }

    [Fact]
    public void A_speed_mode_runs_and_says_how_many_blocks_ran()
    {
        string output = temp.File("fast.png");
        CliResult result = CliRunner.Run("generate", "--demo", "a fox", "--image-size", "64", "--steps", "8", "--seed", "2",
            "--speed-mode", "fastest", "--cache-threshold", "10", "-o", output, "--json", "--progress", "none");
        Assert.Equal(0, result.ExitCode);
        System.Text.Json.JsonElement json = System.Text.Json.JsonDocument.Parse(result.Output).RootElement;
        Assert.Equal("fastest", json.GetProperty("speed_mode").GetString());
        long ran = json.GetProperty("blocks_computed").GetInt64(), total = json.GetProperty("blocks_total").GetInt64();
        Assert.Equal(8 * 5, total);   // the demo transformer: 2 double + 3 single blocks
        Assert.InRange(ran, 1, total - 1);
        Assert.Contains(result.ErrorLines, l => l.StartsWith("speed    fastest: ", StringComparison.Ordinal));
    }

    // No usable GPU here (or a build without CUDA): the demo on cuda fails with the reason, never runs on the CPU.
    [Fact]
    public void A_cuda_device_that_cannot_run_is_refused_with_the_reason()
    {
        if (FluxNativeLibrary.Diagnose().CudaDeviceCount > 0)
        {
            return;  // a GPU is here: the CUDA backend's own tests cover it
        }

        CliResult result = CliRunner.Run("generate", "--demo", "a fox", "--device", "cuda", "-o", temp.File("fox.png"));

        Assert.NotEqual(ExitCodes.Success, result.ExitCode);
        Assert.Contains(result.ErrorLines, line => line.Contains("cuda:0", StringComparison.Ordinal));
        Assert.DoesNotContain(result.ErrorLines, line => line.Contains("   at ", StringComparison.Ordinal));
        Assert.False(File.Exists(temp.File("fox.png")));
    }

    [Fact]
    public void A_prompt_beside_prompt_embeddings_is_an_error()
    {
        string embeds = temp.File("embeds.safetensors");
        new SafetensorsWriter().Add("txt", new float[4 * 32], 1, 4, 32).Add("y", new float[32], 1, 32).Write(embeds);

        CliResult result = CliRunner.Run("generate", "a fox", "--prompt-embeds", embeds, "--transformer", Broken(), "--ae", Broken());

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Equal("flux: --prompt-embeds replaces the prompt: give one or the other, not both.", Assert.Single(result.ErrorLines).TrimEnd());
    }

    [Fact]
    public void A_prompt_is_required_before_anything_loads()
    {
        CliResult result = CliRunner.Run("generate", "--transformer", Broken(), "--ae", Broken());

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Equal("flux: Give a prompt (or --prompt-embeds).", result.ErrorLines[0].TrimEnd());
        Assert.Equal("Run 'flux generate --help' for usage.", result.ErrorLines[^1].TrimEnd());
    }

    [Theory]
    [InlineData("--transformer")]
    [InlineData("--latents")]
    [InlineData("--prompt-embeds")]
    public void A_path_that_does_not_exist_is_named_with_its_option(string option)
    {
        string missing = temp.File("nowhere.safetensors");
        string[] model = option == "--transformer" ? ["--ae", Broken()] : ["--transformer", Broken(), "--ae", Broken()];

        string[] prompt = option == "--prompt-embeds" ? [] : ["a fox"];

        CliResult result = CliRunner.Run(["generate", .. prompt, .. model, option, missing]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Contains($"flux: {option}: no such file or folder: {missing}", result.ErrorLines[0]);
    }

    [Fact]
    public void Sides_of_64_run_with_a_warning_that_they_are_outside_the_trained_range()
    {
        string output = temp.File("small.png");

        CliResult result = CliRunner.Run("generate", "--demo", "--width", "64", "--height", "96", "--steps", "1", "--seed", "1", "-o", output);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("flux: warning: 64x96 is outside FLUX's trained range (256-2048 pixels a side); expect poorer images.", result.ErrorLines);
        RgbImage image = Images.Decode(File.ReadAllBytes(output), out _);
        Assert.Equal((64, 96), (image.Width, image.Height));
    }

    [Fact]
    public void A_side_that_is_not_a_multiple_of_16_is_rounded_with_a_warning()
    {
        CliResult result = CliRunner.Run("generate", "--demo", "--width", "100", "--height", "256", "--steps", "1", "-o", temp.File("x.png"));

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("flux: warning: The width 100 is not a multiple of 16; using 96.", result.ErrorLines);
        Assert.Contains("request  96x256", result.Error);
    }

    [Fact]
    public void A_prompt_longer_than_the_encoders_read_is_warned_about_for_each()
    {
        // The demo's T5 reads 64 tokens; CLIP reads 77 (75 of them the prompt's).
        string prompt = string.Join(' ', Enumerable.Repeat("cat", 80));   // one token a word in both

        CliResult result = CliRunner.Run("generate", "--demo", prompt, "--image-size", "64", "--steps", "1", "-o", temp.File("x.png"));

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("flux: warning: The prompt is 80 CLIP tokens but CLIP reads 77, 75 of them the prompt's: the last 5 are cut off.", result.ErrorLines);
        Assert.Contains("flux: warning: The prompt is 80 T5 tokens but T5 reads 64, 63 of them the prompt's: the last 17 are cut off.", result.ErrorLines);
    }

    [Fact]
    public void Encode_warns_about_a_prompt_cut_short_and_bounds_max_length()
    {
        string prompt = string.Join(' ', Enumerable.Repeat("cat", 20));
        CliResult cut = CliRunner.Run("encode", "--demo", prompt, "--max-length", "8", "-o", temp.File("e.safetensors"));
        CliResult tooLong = CliRunner.Run("encode", "--demo", "a fox", "--max-length", "4096", "-o", temp.File("e.safetensors"));

        Assert.True(cut.ExitCode == 0, cut.Error);
        Assert.Contains("flux: warning: The prompt is 20 T5 tokens but T5 reads 8, 7 of them the prompt's: the last 13 are cut off.", cut.ErrorLines);
        Assert.Equal(ExitCodes.BadInput, tooLong.ExitCode);
        Assert.Equal("flux: --max-length must be between 1 and 512 (got 4096).", Assert.Single(tooLong.ErrorLines).TrimEnd());
    }

    [Fact]
    public void A_request_the_pipeline_refuses_is_said_with_the_option_name()
    {
        var e = new GenerationRequestException("output_quality", "output_quality must be between 1 and 100 (got 0).");
        Assert.Equal("--quality must be between 1 and 100 (got 0).", GenerateCommand.DescribeRequestError(e));
        var latents = new GenerationRequestException("latents", "Initial latents have 3 values but [1, 16, 8, 8] needs 1024.");
        Assert.Equal("--latents: Initial latents have 3 values but [1, 16, 8, 8] needs 1024.", GenerateCommand.DescribeRequestError(latents));
    }
}
