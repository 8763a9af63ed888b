using System.Text.RegularExpressions;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary>
/// <c>flux generate</c>'s progress on standard error (tqdm's counter; a bar on a terminal, lines otherwise) and its
/// cancellation: Ctrl-C stops the pipeline through its token, the terminal is restored, exit code 130.
/// </summary>
public sealed partial class ProgressAndCancelTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData(11, 50, 1.2, 9.0, "11/50 [00:01<00:04, 9.00it/s]")]
    [InlineData(3, 28, 75.5, 0.04, "3/28 [01:15<10:25, 25.00s/it]")]
    [InlineData(1, 4, 3725, 0.5, "1/4 [1:02:05<00:06, 2.00s/it]")]
    [InlineData(0, 28, 0.3, 0, "0/28 [00:00<?, ?it/s]")]
    public void The_step_counter_has_tqdm_s_shape(int step, int total, double elapsedSeconds, double rate, string expected)
    {
        var progress = new GenerationProgress(GenerationStage.Denoising, step, total, TimeSpan.FromSeconds(elapsedSeconds), rate);
        Assert.Equal(expected, ProgressDisplay.StepText(progress));
    }

    [Fact]
    public void Without_a_terminal_progress_is_one_line_a_step_on_standard_error()
    {
        CliResult result = CliRunner.Run("generate", "--demo", "--image-size", "64", "--steps", "3", "-o", temp.File("x.png"));

        Assert.True(result.ExitCode == 0, result.Error);
        string[] steps = [.. result.ErrorLines.Where(l => l.StartsWith("denoising", StringComparison.Ordinal))];
        Assert.Equal(3, steps.Length);
        for (int k = 0; k < 3; k++)
        {
            Assert.Matches(StepLine(k + 1, 3), steps[k]);
        }

        Assert.Contains("decoding", result.ErrorLines);
        Assert.Equal([temp.File("x.png")], result.OutputLines);
    }

    [Fact]
    public void On_a_terminal_progress_is_a_live_bar_that_gives_the_cursor_back()
    {
        CliResult result = CliRunner.Run(
            ["generate", "--demo", "--image-size", "64", "--steps", "3", "-o", temp.File("x.png")], CancellationToken.None, errorIsTerminal: true);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("3/3 [", result.Error);
        Assert.Matches(@"100%.*3/3 \[\d\d:\d\d<00:00, [0-9.]+(it/s|s/it)\]", result.Error);
        AssertCursorShownAfterHidden(result.Error);
        Assert.Equal([temp.File("x.png")], result.OutputLines);
    }

    [Fact]
    public void None_shows_no_progress()
    {
        CliResult result = CliRunner.Run("generate", "--demo", "--image-size", "64", "--steps", "2", "--progress", "none", "-o", temp.File("x.png"));

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.DoesNotContain("denoising", result.Error);
    }

    [Fact]
    public void Cancelling_stops_the_pipeline_at_the_next_step_writes_nothing_and_exits_130()
    {
        using var cancel = new CancellationTokenSource();
        string output = temp.File("never.png");

        CliResult result = CliRunner.Run(
            ["generate", "--demo", "--image-size", "64", "--steps", "50", "-o", output],
            cancel.Token,
            error =>
            {
                if (error.Contains("denoising  2/50", StringComparison.Ordinal))
                {
                    cancel.Cancel();
                }
            });

        Assert.Equal(ExitCodes.Cancelled, result.ExitCode);
        Assert.Equal("flux: cancelled", result.ErrorLines[^1].TrimEnd());
        Assert.DoesNotContain("denoising  4/50", result.Error);   // stopped within a step
        Assert.False(File.Exists(output));
        Assert.Equal(string.Empty, result.Output);
    }

    [Fact]
    public void Cancelling_under_the_bar_restores_the_cursor_before_saying_so()
    {
        using var cancel = new CancellationTokenSource();

        // The bar redraws ten times a second: 512x512 steps are slow enough for it to show a few.
        CliResult result = CliRunner.Run(
            ["generate", "--demo", "--image-size", "512", "--steps", "50", "-o", temp.File("x.png")],
            cancel.Token,
            error =>
            {
                if (error.Contains("/50 [", StringComparison.Ordinal))
                {
                    cancel.Cancel();
                }
            },
            errorIsTerminal: true);

        Assert.Equal(ExitCodes.Cancelled, result.ExitCode);
        AssertCursorShownAfterHidden(result.Error);
        Assert.EndsWith("flux: cancelled", result.Error.TrimEnd());
        Assert.True(result.Error.LastIndexOf(ShowCursor, StringComparison.Ordinal) < result.Error.LastIndexOf("flux: cancelled", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Ctrl_c_in_a_real_process_cancels_restores_the_terminal_and_exits_130()
    {
        // 1024x1024, 50 steps: about a third of a second a step on the demo's models, so SIGINT lands mid-run.
        string output = temp.File("never.png");

        CliResult result = await CliRunner.RunProcessAndInterruptAsync(
            new Regex(@"\b[1-9][0-9]?/50 \["), "generate", "--demo", "--image-size", "1024", "--steps", "50", "--progress", "bar", "-o", output);

        Assert.Equal(ExitCodes.Cancelled, result.ExitCode);
        AssertCursorShownAfterHidden(result.Error);
        Assert.EndsWith("flux: cancelled", result.Error.TrimEnd());
        Assert.DoesNotContain("   at ", result.Error);
        Assert.DoesNotContain("50/50", result.Error);
        Assert.False(File.Exists(output));
    }

    private const string HideCursor = "\u001b[?25l";
    private const string ShowCursor = "\u001b[?25h";

    private static void AssertCursorShownAfterHidden(string error)
    {
        int hidden = error.LastIndexOf(HideCursor, StringComparison.Ordinal);
        Assert.True(hidden >= 0, "the bar never hid the cursor: it did not run as a live display");
        Assert.True(error.IndexOf(ShowCursor, hidden, StringComparison.Ordinal) > hidden, "the cursor was left hidden");
    }

    private static Regex StepLine(int step, int total) =>
        new($@"^denoising  {step}/{total} \[\d\d:\d\d<(\d\d:\d\d|\?), ([0-9]+\.[0-9]{{2}}(it/s|s/it)|\?it/s)\]$");
}
