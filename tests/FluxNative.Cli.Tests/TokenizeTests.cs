using System.Text.Json;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux tokenize</c>: ids as the pipelines pad them, --model folders, JSON, and one-line input errors.</summary>
public sealed class TokenizeTests : IDisposable
{
    private static readonly string Files = Path.Combine(RepoPaths.Root, "native", "tests", "data", "tokenizers", "files");
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    private static int[] Ids(string output) => [.. output.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)];

    [Fact]
    public void Clip_prints_77_ids_with_bos_eos_and_endoftext_padding()
    {
        CliResult result = CliRunner.Run("tokenize", "--tokenizer", "clip", "--tokenizer-path", Path.Combine(Files, "clip"), "a photo of a cat");

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal(string.Empty, result.Error);
        Assert.Equal([49406, 320, 1125, 539, 320, 2368, 49407, .. Enumerable.Repeat(49407, 70)], Ids(result.Output));
    }

    [Fact]
    public void T5_prints_512_ids_by_default_and_max_length_when_given()
    {
        CliResult full = CliRunner.Run("tokenize", "--tokenizer", "t5", "--tokenizer-path", Path.Combine(Files, "t5"), "Hello world");
        CliResult schnell = CliRunner.Run("tokenize", "--tokenizer", "t5", "--tokenizer-path", Path.Combine(Files, "t5"), "--max-length", "256", "Hello world");

        Assert.True(full.ExitCode == 0, full.Error);
        Assert.Equal([8774, 296, 1, .. Enumerable.Repeat(0, 509)], Ids(full.Output));
        Assert.Equal(256, Ids(schnell.Output).Length);
    }

    [Fact]
    public void Model_folder_uses_tokenizer_and_tokenizer_2()
    {
        string model = temp.File("flux");
        CopyFolder(Path.Combine(Files, "clip"), Path.Combine(model, "tokenizer"));
        CopyFolder(Path.Combine(Files, "t5"), Path.Combine(model, "tokenizer_2"));

        CliResult clip = CliRunner.Run("tokenize", "--tokenizer", "clip", "--model", model, "--max-length", "8", "a cat");
        CliResult t5 = CliRunner.Run("tokenize", "--tokenizer", "t5", "--model", model, "--max-length", "4", "a cat");

        Assert.True(clip.ExitCode == 0, clip.Error);
        Assert.Equal([49406, 320, 2368, 49407, 49407, 49407, 49407, 49407], Ids(clip.Output));
        Assert.True(t5.ExitCode == 0, t5.Error);
        Assert.Equal([3, 9, 1712, 1], Ids(t5.Output));
    }

    [Fact]
    public void Json_output_names_the_tokenizer_and_length()
    {
        CliResult result = CliRunner.Run("tokenize", "--tokenizer", "clip", "--tokenizer-path", Path.Combine(Files, "clip"), "--max-length", "5", "--json", "a cat");

        Assert.True(result.ExitCode == 0, result.Error);
        using JsonDocument json = JsonDocument.Parse(result.Output);
        Assert.Equal("clip", json.RootElement.GetProperty("tokenizer").GetString());
        Assert.Equal(5, json.RootElement.GetProperty("max_length").GetInt32());
        Assert.Equal([49406, 320, 2368, 49407, 49407], json.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()));
    }

    [Fact]
    public void Missing_tokenizer_files_are_one_line_input_errors()
    {
        CliResult result = CliRunner.Run("tokenize", "--tokenizer", "clip", "--tokenizer-path", temp.Path, "a cat");

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Equal(string.Empty, result.Output);
        string line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("flux: ", line);
        Assert.Contains("vocab.json", line);
    }

    [Fact]
    public void Corrupt_tokenizer_file_is_an_input_error_naming_it()
    {
        File.WriteAllText(temp.File("tokenizer.json"), "{ not json");

        CliResult result = CliRunner.Run("tokenize", "--tokenizer", "t5", "--tokenizer-path", temp.Path, "a cat");

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Contains("tokenizer.json", Assert.Single(result.ErrorLines));
    }

    [Fact]
    public void Model_without_tokenizer_folder_is_an_input_error()
    {
        CliResult result = CliRunner.Run("tokenize", "--tokenizer", "t5", "--model", temp.Path, "a cat");

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Contains("tokenizer_2", Assert.Single(result.ErrorLines));
    }

    [Theory]
    [InlineData("clip", "a photo of a cat")]
    [InlineData("t5", "Hello world")]
    public void Without_a_path_the_tokenizers_shipped_with_flux_are_used(string tokenizer, string text)
    {
        // The documented first command: no download, no path.
        CliResult bundled = CliRunner.Run("tokenize", "--tokenizer", tokenizer, text);
        CliResult fromFiles = CliRunner.Run("tokenize", "--tokenizer", tokenizer, "--tokenizer-path", Path.Combine(Files, tokenizer), text);

        Assert.True(bundled.ExitCode == 0, bundled.Error);
        Assert.Equal(string.Empty, bundled.Error);
        Assert.Equal(Ids(fromFiles.Output), Ids(bundled.Output));
        Assert.Equal(tokenizer == "clip" ? 77 : 512, Ids(bundled.Output).Length);
    }

    [Theory]
    [InlineData("clip", 80, "flux: warning: The prompt is 80 CLIP tokens but CLIP reads 77, 75 of them the prompt's: the last 5 are cut off.")]
    [InlineData("t5", 20, "flux: warning: The prompt is 20 T5 tokens but T5 reads 16, 15 of them the prompt's: the last 5 are cut off.")]
    public void A_prompt_cut_short_is_a_warning_on_standard_error(string tokenizer, int words, string warning)
    {
        string[] length = tokenizer == "t5" ? ["--max-length", "16"] : [];
        CliResult result = CliRunner.Run(["tokenize", "--tokenizer", tokenizer, .. length, string.Join(' ', Enumerable.Repeat("cat", words))]);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal(warning, Assert.Single(result.ErrorLines).TrimEnd());
        Assert.Equal(tokenizer == "clip" ? 77 : 16, Ids(result.Output).Length);
    }

    [Theory]
    [InlineData("--tokenizer", "bpe", "--tokenizer-path", ".", "a")]
    [InlineData("--tokenizer", "clip", "--tokenizer-path", ".", "--model", ".", "a")]
    [InlineData("--tokenizer", "t5", "--tokenizer-path", ".", "--max-length", "0", "a")]
    [InlineData("--tokenizer", "t5", "--max-length", "513", "a")]
    [InlineData("--tokenizer", "clip", "--tokenizer-path", ".", "--max-length", "1", "a")]
    [InlineData("--tokenizer-path", ".", "a")]
    public void Bad_usage_exits_with_2(params string[] args)
    {
        CliResult result = CliRunner.Run(["tokenize", .. args]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Equal(string.Empty, result.Output);
        Assert.StartsWith("flux: ", result.ErrorLines[0]);
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
    }
}
