using System.Diagnostics;
using System.Net;
using System.Text.Json;
using FluxNative.Testing;

namespace FluxNative.Server.Tests;

/// <summary>Predictions and outputs survive a restart; a crash leaves no prediction silently lost.</summary>
public sealed class PersistenceTests
{
    [Fact]
    public async Task Predictions_and_outputs_survive_a_restart()
    {
        using var directory = new TempDirectory();
        string id, url;
        await using (ServerHost first = await ServerHost.StartAsync(directory: directory.Path))
        {
            Reply reply = await first.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
            id = reply.Json.GetProperty("id").GetString()!;
            url = reply.Json.GetProperty("output")[0].GetString()!;
            Assert.Equal("succeeded", reply.Json.GetProperty("status").GetString());
        }

        await using ServerHost second = await ServerHost.StartAsync(directory: directory.Path);
        JsonElement p = (await second.GetAsync($"/v1/predictions/{id}")).Json;
        Assert.Equal("succeeded", p.GetProperty("status").GetString());
        Assert.Equal(url, p.GetProperty("output")[0].GetString());   // the signing key is kept too
        Assert.Contains("| 1/1 [", p.GetProperty("logs").GetString(), StringComparison.Ordinal);
        using HttpResponseMessage file = await second.Client.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, file.StatusCode);
        Assert.True((await file.Content.ReadAsByteArrayAsync()).Length > 0);
    }

    [Fact]
    public async Task Outputs_past_the_retention_are_removed_but_the_prediction_stays()
    {
        await using ServerHost server = await ServerHost.StartAsync(o => o with { OutputRetention = TimeSpan.FromSeconds(1) });
        Reply reply = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
        string id = reply.Json.GetProperty("id").GetString()!;
        string url = reply.Json.GetProperty("output")[0].GetString()!;
        JsonElement p = await server.WaitForAsync(id, v => v.GetProperty("data_removed").GetBoolean(), seconds: 10);
        Assert.Equal("succeeded", p.GetProperty("status").GetString());
        using HttpResponseMessage file = await server.Client.GetAsync(url);
        Assert.Equal(HttpStatusCode.NotFound, file.StatusCode);
    }

    [Fact]
    public async Task A_killed_server_reports_its_unfinished_predictions_as_failed_after_restart()
    {
        using var directory = new TempDirectory();
        string database = directory.File("flux.db"), outputs = directory.File("outputs");
        string done, running, waiting;
        await using (FluxServeProcess child = await FluxServeProcess.StartAsync(database, outputs))
        {
            done = await child.CreateAsync(ServerHost.QuickInput, wait: true);
            running = await child.CreateAsync(ServerHost.LongInput, wait: false);
            waiting = await child.CreateAsync(ServerHost.QuickInput, wait: false);
            var clock = Stopwatch.StartNew();
            while (true)
            {
                JsonElement p = JsonDocument.Parse(await child.Client.GetStringAsync($"/v1/predictions/{running}")).RootElement;
                if (p.GetProperty("status").GetString() == "processing" && p.GetProperty("logs").GetString()!.Contains("| 2/50 [", StringComparison.Ordinal))
                {
                    break;
                }

                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), "the long prediction never started");
                await Task.Delay(20);
            }
        }   // killed: a crash, no shutdown, no chance to mark anything

        await using ServerHost restarted = await ServerHost.StartAsync(directory: directory.Path);
        JsonElement finished = (await restarted.GetAsync($"/v1/predictions/{done}")).Json;
        Assert.Equal("succeeded", finished.GetProperty("status").GetString());
        using (HttpResponseMessage file = await restarted.Client.GetAsync(finished.GetProperty("output")[0].GetString()))
        {
            Assert.Equal(HttpStatusCode.OK, file.StatusCode);
        }

        JsonElement interrupted = (await restarted.GetAsync($"/v1/predictions/{running}")).Json;
        Assert.Equal("failed", interrupted.GetProperty("status").GetString());
        Assert.Contains("while this prediction was running", interrupted.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.NotEqual(JsonValueKind.Null, interrupted.GetProperty("completed_at").ValueKind);

        JsonElement neverRan = (await restarted.GetAsync($"/v1/predictions/{waiting}")).Json;
        Assert.Equal("failed", neverRan.GetProperty("status").GetString());
        Assert.Contains("before this prediction started", neverRan.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(JsonValueKind.Null, neverRan.GetProperty("started_at").ValueKind);
    }
}
