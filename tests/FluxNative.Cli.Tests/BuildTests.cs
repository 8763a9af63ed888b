using System.Text.Json.Nodes;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux build</c>: an engine from the demo models, its quality gate, and the commands that take an engine as a model.</summary>
public sealed class BuildTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public BuildTests()
    {
        // The demo models, with their tokenizers where a model folder keeps them (beside the encoders).
        Sources = DemoModels.Write(temp.File("demo"));
        CopyFolder(Sources.ClipTokenizer!, temp.File(Path.Combine("demo", "tokenizer")));
        CopyFolder(Sources.T5Tokenizer!, temp.File(Path.Combine("demo", "tokenizer_2")));
    }

    private FluxPipelineSources Sources { get; }

    public void Dispose() => temp.Dispose();

    private string[] SourceArgs() => ["--transformer", Sources.Transformer!, "--ae", Sources.Autoencoder!, "--clip", Sources.Clip!, "--t5", Sources.T5!];

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
    }

    [Fact]
    public void An_fp8_engine_is_built_checked_inspected_and_generates()
    {
        string engine = temp.File("demo-fp8.fluxengine"), prompts = temp.File("prompts.txt");
        File.WriteAllLines(prompts, ["# calibration", "a red fox", "", "a harbour at dusk"]);
        CliResult built = CliRunner.Run(["build", .. SourceArgs(), "--precision", "fp8", "--t5-precision", "fp8", "-o", engine, "--calibration", prompts,
            "--check-size", "64", "--check-steps", "2", "--no-hash", "--json"]);

        Assert.True(built.ExitCode == 0, built.Error);
        Assert.True(File.Exists(engine));
        Assert.False(File.Exists(engine + ".unchecked"));
        JsonObject result = JsonNode.Parse(built.Output)!.AsObject();
        Assert.Equal("fp8", (string?)result["precision"]);
        JsonObject quality = result["build"]!["quality"]!.AsObject();
        Assert.Equal(2, (int)quality["prompts"]!);
        Assert.True((bool)quality["passed"]!);
        Assert.InRange((double)quality["transformer_relative_l2"]!, 1e-4, 6e-2);
        Assert.Contains("quality  transformer output", built.Error);

        CliResult inspected = CliRunner.Run("inspect", engine);
        Assert.True(inspected.ExitCode == 0, inspected.Error);
        Assert.Contains("engine", inspected.Output);
        Assert.Contains("fp8, packed as cpu-panels32.", inspected.Output);
        Assert.Contains("F8_E4M3 x", inspected.Output);

        string image = temp.File("fox.png");
        CliResult generated = CliRunner.Run("generate", "a red fox", "--model", engine, "--width", "64", "--height", "64", "--steps", "2",
            "--max-length", "64", "--seed", "3", "-o", image, "--progress", "none");
        Assert.True(generated.ExitCode == 0, generated.Error);
        Assert.True(new FileInfo(image).Length > 0);
    }

    [Fact]
    public void An_engine_over_the_bounds_is_not_written_unless_forced()
    {
        string engine = temp.File("strict.fluxengine");
        string[] args = ["build", .. SourceArgs(), "--precision", "fp8", "-o", engine, "--check-size", "64", "--check-steps", "1", "--no-hash", "--max-rel-l2", "1e-9"];
        CliResult refused = CliRunner.Run(args);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("was not written", refused.Error);
        Assert.False(File.Exists(engine));
        Assert.False(File.Exists(engine + ".unchecked"));

        CliResult forced = CliRunner.Run([.. args, "--force"]);
        Assert.True(forced.ExitCode == 0, forced.Error);
        Assert.Contains("written because of --force", forced.Error);
        Assert.True(File.Exists(engine));
        Assert.Equal(engine, forced.Output.Trim());
    }

    [Theory]
    [InlineData("Nothing to build", "build", "-o", "x.fluxengine")]
    [InlineData("--force sets the quality check", "build", "--transformer", "{demo}", "-o", "x.fluxengine", "--no-check", "--force")]
    [InlineData("--precision", "build", "--transformer", "{demo}", "-o", "x.fluxengine", "--precision", "f32")]
    public void Bad_options_are_one_line_naming_the_option(string says, params string[] args)
    {
        CliResult result = CliRunner.Run(args.Select(a => a == "{demo}" ? Sources.Transformer! : a).ToArray());
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(says, result.Error);
    }
}
