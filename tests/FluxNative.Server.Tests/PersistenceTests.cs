using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
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
        using Process child = StartFluxServe(database, outputs);
        string done, running, waiting;
        try
        {
            string baseUrl = await ListeningAddressAsync(child);
            using var client = new HttpClient { BaseAddress = new Uri(baseUrl), Timeout = TimeSpan.FromSeconds(60) };
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ServerHost.Key);
            await WaitReadyAsync(client);

            done = await CreateAsync(client, ServerHost.QuickInput, wait: true);
            running = await CreateAsync(client, ServerHost.LongInput, wait: false);
            waiting = await CreateAsync(client, ServerHost.QuickInput, wait: false);
            var clock = Stopwatch.StartNew();
            while (true)
            {
                JsonElement p = JsonDocument.Parse(await client.GetStringAsync($"/v1/predictions/{running}")).RootElement;
                if (p.GetProperty("status").GetString() == "processing" && p.GetProperty("logs").GetString()!.Contains("| 1/50 [", StringComparison.Ordinal))
                {
                    break;
                }

                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), "the long prediction never started");
                await Task.Delay(20);
            }
        }
        finally
        {
            child.Kill(entireProcessTree: true);   // a crash: no shutdown, no chance to mark anything
            await child.WaitForExitAsync();
        }

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

    private static Process StartFluxServe(string database, string outputs)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[]
        {
            Path.Combine(AppContext.BaseDirectory, "flux.dll"), "serve", "--demo", "--demo-dir", ServerHost.DemoDirectory,
            "--urls", "http://127.0.0.1:0", "--database", database, "--output-dir", outputs,
        })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["FLUX_API_KEYS"] = ServerHost.Key;
        start.Environment["Logging__LogLevel__Default"] = "Warning";
        return Process.Start(start)!;
    }

    private static async Task<string> ListeningAddressAsync(Process child)
    {
        var errors = new StringBuilder();
        child.ErrorDataReceived += (_, e) => { lock (errors) { errors.AppendLine(e.Data); } };
        child.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await child.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith("listening on ", StringComparison.Ordinal))
            {
                // Keep draining standard output so the child never blocks on a full pipe.
                _ = child.StandardOutput.ReadToEndAsync(CancellationToken.None);
                return line["listening on ".Length..].Trim();
            }
        }

        lock (errors)
        {
            throw new InvalidOperationException($"flux serve exited ({(child.HasExited ? child.ExitCode : -1)}) before listening: {errors}");
        }
    }

    private static async Task WaitReadyAsync(HttpClient client)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using HttpResponseMessage ready = await client.GetAsync("/readyz");
            if (ready.StatusCode == HttpStatusCode.OK)
            {
                return;
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), "flux serve never became ready");
            await Task.Delay(50);
        }
    }

    private static async Task<string> CreateAsync(HttpClient client, string input, bool wait)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/models/black-forest-labs/flux-dev/predictions")
        {
            Content = new StringContent($$"""{"input":{{input}}}""", Encoding.UTF8, "application/json"),
        };
        if (wait)
        {
            request.Headers.Add("Prefer", "wait");
        }

        using HttpResponseMessage response = await client.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        JsonElement p = JsonDocument.Parse(text).RootElement;
        if (wait)
        {
            Assert.Equal("succeeded", p.GetProperty("status").GetString());
        }

        return p.GetProperty("id").GetString()!;
    }
}
