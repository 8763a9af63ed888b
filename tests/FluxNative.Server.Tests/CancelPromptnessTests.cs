using System.Diagnostics;
using System.Net;
using Xunit.Abstractions;

namespace FluxNative.Server.Tests;

/// <summary>
/// Cancellation is prompt at any size (issue 17, item 6). A cancelled 1792×1024 demo request used to keep the
/// machine for minutes: the transformer and the decoder checked the token only between blocks, and one block of the
/// decoder (its attention over every latent pixel) ran for tens of seconds on the kernels' shared threads. Now the
/// kernels stop within a tile, so the next prediction runs as soon as the cancel answers.
/// </summary>
public sealed class CancelPromptnessTests(ITestOutputHelper output) : IAsyncLifetime
{
    /// <summary>How much longer than alone the next prediction may take after a cancel: the "within one second".</summary>
    private static readonly TimeSpan Allowance = TimeSpan.FromSeconds(1);

    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Fact]
    public Task A_large_request_cancelled_while_denoising_frees_the_pipeline_within_a_second() => CancelAndRunNextAsync(steps: 50, during: "| 1/50");

    [Fact]
    public Task A_large_request_cancelled_while_decoding_frees_the_pipeline_within_a_second() => CancelAndRunNextAsync(steps: 1, during: "| 1/1");

    private async Task CancelAndRunNextAsync(int steps, string during)
    {
        TimeSpan alone = TimeSpan.MaxValue;
        for (int k = 0; k < 2; k++)
        {
            alone = Min(alone, await RunSmallAsync());
        }

        string large = await server.CreateAsync(
            $$"""{"prompt":"a large fox","aspect_ratio":"custom","width":1792,"height":1024,"num_inference_steps":{{steps}},"output_format":"png"}""");
        await server.WaitForAsync(large, p => p.GetProperty("logs").GetString()!.Contains(during, StringComparison.Ordinal), seconds: 120);
        if (steps == 1)
        {
            // Its last step is done: the decoder runs, and after a moment its mid attention over the 224×128 latent
            // pixels (one block: tens of seconds at this size on a few cores).
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.True((await server.GetAsync($"/v1/predictions/{large}")).Json.GetProperty("status").GetString() == "processing",
                "the decoder finished before the cancel: this machine is too fast for the test's timing");
        }

        var clock = Stopwatch.StartNew();
        Reply cancel = await server.PostAsync($"/v1/predictions/{large}/cancel", string.Empty);
        TimeSpan answered = clock.Elapsed;
        Assert.Equal("canceled", cancel.Json.GetProperty("status").GetString());
        TimeSpan next = await RunSmallAsync();
        output.WriteLine($"a small prediction alone: {alone.TotalSeconds:F2} s; the cancel answered in {answered.TotalSeconds:F2} s; the next small prediction took {next.TotalSeconds:F2} s");
        Assert.True(answered < TimeSpan.FromSeconds(1), $"the cancel took {answered.TotalSeconds:F2} s to answer");
        Assert.True(next < alone + Allowance, $"the next prediction took {next.TotalSeconds:F2} s, {alone.TotalSeconds:F2} s alone");
    }

    /// <summary>A 64×64, one-step prediction, created and waited for: the time until it succeeded.</summary>
    private async Task<TimeSpan> RunSmallAsync()
    {
        var clock = Stopwatch.StartNew();
        Reply reply = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
        Assert.Equal(HttpStatusCode.Created, reply.Status);
        Assert.Equal("succeeded", reply.Json.GetProperty("status").GetString());
        return clock.Elapsed;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
