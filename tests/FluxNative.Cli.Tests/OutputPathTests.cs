using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary>
/// <c>flux generate --output</c>: checked before the model loads (a generation never runs only to fail at the end),
/// an extension that is not the format refused, a folder filled with numbered files.
/// </summary>
public sealed class OutputPathTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    private static readonly string[] Quick = ["--demo", "--image-size", "64", "--steps", "1", "--seed", "3"];

    /// <summary>A model that cannot load: a command that reached the loading would fail on it, not on the output.</summary>
    private string[] BrokenModel()
    {
        string path = temp.File("broken.safetensors");
        File.WriteAllText(path, "not a checkpoint");
        return ["generate", "--transformer", path, "--ae", path, "a fox"];
    }

    [Theory]
    [InlineData("/proc/x/y.png", "--output /proc/x/y.png: cannot write in /proc")]
    [InlineData("FILE/y.png", "--output FILE/y.png: FILE is a file, not a folder.")]
    public void A_place_that_cannot_be_written_is_refused_before_the_model_loads(string output, string message)
    {
        string file = temp.File("file");
        File.WriteAllText(file, "x");

        CliResult result = CliRunner.Run([.. BrokenModel(), "-o", output.Replace("FILE", file)]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.StartsWith("flux: " + message.Replace("FILE", file), Assert.Single(result.ErrorLines));
    }

    [Theory]
    [InlineData("x.gif", null, "--output x.gif: flux writes PNG, JPEG and WebP, not '.gif'; give a .png, .jpg, .jpeg or .webp name (or a folder).")]
    [InlineData("x.tiff", null, "--output x.tiff: flux writes PNG, JPEG and WebP, not '.tiff'")]
    [InlineData("x.jpg", "png", "--output x.jpg names a JPEG file but --format is png; give a .png name, or leave out --format.")]
    [InlineData("x.png", "webp", "--output x.png names a PNG file but --format is webp; give a .webp name, or leave out --format.")]
    public void An_extension_that_is_not_the_format_is_refused(string name, string? format, string message)
    {
        string[] args = [.. BrokenModel(), "-o", temp.File(name), .. format is null ? Array.Empty<string>() : ["--format", format]];

        CliResult result = CliRunner.Run(args);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.StartsWith("flux: " + message.Replace(name, temp.File(name)), Assert.Single(result.ErrorLines));
        Assert.False(File.Exists(temp.File(name)));
    }

    [Theory]
    [InlineData("x.jpeg", "jpg", ImageFormat.Jpeg)]
    [InlineData("x.JPG", null, ImageFormat.Jpeg)]
    [InlineData("x.webp", "webp", ImageFormat.Webp)]
    public void A_matching_extension_and_format_are_accepted(string name, string? format, ImageFormat expected)
    {
        string[] args = ["generate", .. Quick, "-o", temp.File(name), .. format is null ? Array.Empty<string>() : ["--format", format]];

        CliResult result = CliRunner.Run(args);

        Assert.True(result.ExitCode == 0, result.Error);
        Images.Decode(File.ReadAllBytes(temp.File(name)), out ImageFormat written);
        Assert.Equal(expected, written);
    }

    [Fact]
    public void A_name_without_extension_gets_the_format_s()
    {
        CliResult result = CliRunner.Run(["generate", .. Quick, "-o", temp.File("fox"), "--format", "jpg"]);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal([temp.File("fox.jpg")], result.OutputLines);
        Images.Decode(File.ReadAllBytes(temp.File("fox.jpg")), out ImageFormat written);
        Assert.Equal(ImageFormat.Jpeg, written);
    }

    [Fact]
    public void A_folder_receives_numbered_files_after_those_already_there()
    {
        string folder = temp.File("outputs");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "flux-00007.png"), "an older one");

        CliResult first = CliRunner.Run(["generate", .. Quick, "-n", "2", "-o", folder]);
        CliResult second = CliRunner.Run(["generate", .. Quick, "-o", folder, "--format", "webp"]);

        Assert.True(first.ExitCode == 0, first.Error);
        Assert.True(second.ExitCode == 0, second.Error);
        Assert.Equal([Path.Combine(folder, "flux-00008.png"), Path.Combine(folder, "flux-00009.png")], first.OutputLines);
        Assert.Equal([Path.Combine(folder, "flux-00010.webp")], second.OutputLines);
        Assert.Equal("an older one", File.ReadAllText(Path.Combine(folder, "flux-00007.png")));
        foreach (string file in first.OutputLines.Concat(second.OutputLines))
        {
            Assert.Equal((64, 64), Size(file));
        }
    }

    [Fact]
    public void A_name_ending_in_a_slash_is_a_folder_made_on_the_way()
    {
        string folder = temp.File("new") + "/";

        CliResult result = CliRunner.Run(["generate", .. Quick, "-o", folder]);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal([Path.Combine(folder, "flux-00001.png")], result.OutputLines);
        Assert.True(File.Exists(Path.Combine(folder, "flux-00001.png")));
    }

    [Fact]
    public void Save_latents_is_checked_before_the_model_loads_too()
    {
        CliResult result = CliRunner.Run([.. BrokenModel(), "-o", temp.File("x.png"), "--save-latents", "/proc/x/latents.safetensors"]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.StartsWith("flux: --save-latents /proc/x/latents.safetensors: cannot write in /proc", Assert.Single(result.ErrorLines));
    }

    private static (int, int) Size(string file)
    {
        RgbImage image = Images.Decode(File.ReadAllBytes(file), out _);
        return (image.Width, image.Height);
    }
}
