using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server.Tests;

/// <summary>Server-Sent Events and webhooks, on Kestrel on loopback (the webhook receiver is a second local server).</summary>
public sealed class StreamAndWebhookTests
{
    [Fact]
    public async Task Stream_sends_progress_logs_output_and_done()
    {
        await using ServerHost server = await ServerHost.StartAsync(kestrel: true);

        // The prediction waits behind a long one until its stream is subscribed, so the stream sees it run.
        string blocker = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(blocker);
        string id = await server.CreateAsync("""{"prompt":"streamed","image_size":256,"num_inference_steps":12}""");
        Task<List<(string Event, string Data)>> reading = ReadStreamAsync(server.Client, $"/v1/predictions/{id}/stream?progress=true");
        DateTime end = DateTime.UtcNow.AddSeconds(20);
        while (server.Predictions.Live(id)?.Subscribers != 1)
        {
            Assert.True(DateTime.UtcNow < end, "the stream never subscribed");
            await Task.Delay(10);
        }

        await server.PostAsync($"/v1/predictions/{blocker}/cancel", "");
        List<(string Event, string Data)> events = await reading.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("done", events[^1].Event);
        Assert.Equal("{}", events[^1].Data);
        string output = Assert.Single(events, e => e.Event == "output").Data;
        Assert.StartsWith(server.Client.BaseAddress!.ToString().TrimEnd('/') + $"/v1/files/{id}/out-0.webp?sig=", output, StringComparison.Ordinal);
        Assert.Contains(events, e => e.Event == "logs" && e.Data.StartsWith("100%|██████████| 12/12 [", StringComparison.Ordinal));

        JsonElement[] progress = [.. events.Where(e => e.Event == "progress").Select(e => JsonDocument.Parse(e.Data).RootElement)];
        Assert.NotEmpty(progress);
        Assert.All(progress, p => Assert.Equal(12, p.GetProperty("total").GetInt32()));
        Assert.Contains(progress, p => p.GetProperty("stage").GetString() == "denoising" && p.GetProperty("step").GetInt32() == 12);
        int[] steps = [.. progress.Where(p => p.GetProperty("stage").GetString() == "denoising").Select(p => p.GetProperty("step").GetInt32())];
        Assert.Equal(steps.Order(), steps);

        // A finished prediction's stream replays its logs, output and done (progress events only when asked for).
        List<(string Event, string Data)> replay = await ReadStreamAsync(server.Client, $"/v1/predictions/{id}/stream");
        Assert.Equal(["output", "done"], replay.Where(e => e.Event != "logs").Select(e => e.Event));
        Assert.Equal(output, replay.Single(e => e.Event == "output").Data);
    }

    [Fact]
    public async Task Stream_of_a_canceled_prediction_ends_with_done_canceled()
    {
        await using ServerHost server = await ServerHost.StartAsync(kestrel: true);
        string id = await server.CreateAsync(ServerHost.LongInput);
        Task<List<(string Event, string Data)>> reading = ReadStreamAsync(server.Client, $"/v1/predictions/{id}/stream");
        await server.WaitStepAsync(id);
        await server.PostAsync($"/v1/predictions/{id}/cancel", "");
        List<(string Event, string Data)> events = await reading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(("done", """{"reason":"canceled"}"""), events[^1]);
        Assert.DoesNotContain(events, e => e.Event == "output");
        Assert.DoesNotContain(events, e => e.Event == "progress");   // not asked for
        Assert.Contains(events, e => e.Event == "logs" && e.Data.Contains("| 1/50 [", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Webhooks_are_signed_retried_and_filtered()
    {
        await using var receiver = await WebhookReceiver.StartAsync(failFirst: 2);
        await using ServerHost server = await ServerHost.StartAsync(
            o => o with { AllowPrivateWebhookTargets = true, WebhookRetryDelay = TimeSpan.FromMilliseconds(50) }, kestrel: true);
        string secret = (await server.GetAsync("/v1/webhooks/default/secret")).Json.GetProperty("key").GetString()!;

        string all = await server.CreateAsync("""{"prompt":"hooked","image_size":64,"num_inference_steps":2}""", $$""","webhook":"{{receiver.Url}}/all" """);
        string onlyCompleted = await server.CreateAsync(ServerHost.QuickInput, $$""","webhook":"{{receiver.Url}}/completed","webhook_events_filter":["completed"]""");
        string legacy = await server.CreateAsync(ServerHost.QuickInput, $$""","webhook_completed":"{{receiver.Url}}/legacy" """);
        await server.WaitFinishedAsync(all);
        await server.WaitFinishedAsync(onlyCompleted);
        await server.WaitFinishedAsync(legacy);
        await receiver.WaitAsync(r => new[] { "start", "output", "completed" }.All(e => r.Any(d => d.Path == "/all" && d.Event == e && d.Status == 200))
                                     && r.Any(d => d.Path == "/completed" && d.Status == 200)
                                     && r.Any(d => d.Path == "/legacy" && d.Status == 200)
                                     && r.Where(d => d.Status == 500).All(failed => r.Any(d => d.Id == failed.Id && d.Status == 200)),
            TimeSpan.FromSeconds(20));

        Delivery[] deliveries = receiver.Deliveries;
        byte[] key = Convert.FromBase64String(secret["whsec_".Length..]);
        foreach (Delivery d in deliveries)
        {
            // Standard Webhooks: v1,base64(HMAC-SHA256(key, id.timestamp.body)), and a timestamp of now.
            string expected = "v1," + Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{d.Id}.{d.Timestamp}.{d.Body}")));
            Assert.Equal(expected, d.Signature);
            Assert.True(Math.Abs(DateTimeOffset.UtcNow.ToUnixTimeSeconds() - long.Parse(d.Timestamp, CultureInfo.InvariantCulture)) < 120);
            Assert.Equal(d.Path switch { "/all" => all, "/completed" => onlyCompleted, _ => legacy }, JsonDocument.Parse(d.Body).RootElement.GetProperty("id").GetString());
        }

        // The first two deliveries failed (500) and were retried with the same webhook-id.
        Delivery first = deliveries[0];
        Assert.Equal(500, first.Status);
        Assert.True(deliveries.Count(d => d.Id == first.Id) >= 2);
        Assert.Contains(deliveries, d => d.Id == first.Id && d.Status == 200);

        string[] allEvents = [.. deliveries.Where(d => d.Path == "/all" && d.Status == 200).Select(d => d.Event).Distinct()];
        Assert.Contains("start", allEvents);
        Assert.Contains("output", allEvents);
        Assert.Contains("completed", allEvents);
        Delivery completed = deliveries.Last(d => d.Path == "/all" && d.Event == "completed" && d.Status == 200);
        JsonElement final = JsonDocument.Parse(completed.Body).RootElement;
        Assert.Equal("succeeded", final.GetProperty("status").GetString());
        Assert.Single(final.GetProperty("output").EnumerateArray());

        Assert.Equal(["completed"], deliveries.Where(d => d.Path == "/completed").Select(d => d.Event).Distinct());
        Assert.Equal(["completed"], deliveries.Where(d => d.Path == "/legacy").Select(d => d.Event).Distinct());
    }

    [Fact]
    public async Task Webhook_to_a_private_address_is_refused_at_create_and_at_connect()
    {
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("127.0.0.1")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("169.254.169.254")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("192.168.1.10")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("172.20.0.1")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("::1")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("fd00::1")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("fe80::1")));
        Assert.True(WebhookTargets.IsInside(IPAddress.Parse("::ffff:10.0.0.1")));
        Assert.False(WebhookTargets.IsInside(IPAddress.Parse("93.184.216.34")));
        Assert.False(WebhookTargets.IsInside(IPAddress.Parse("172.32.0.1")));
        Assert.False(WebhookTargets.IsInside(IPAddress.Parse("2606:4700::1111")));

        await using var receiver = await WebhookReceiver.StartAsync(failFirst: 0);
        await using ServerHost server = await ServerHost.StartAsync(kestrel: true);
        Reply literal = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}},"webhook":"{{receiver.Url}}/x"}""");
        literal.AssertError(HttpStatusCode.UnprocessableEntity, "loopback, link-local or private", "webhook");

        // A name that passed the create-time check but resolves to an inside address is refused when connecting.
        WebhookDispatcher dispatcher = server.App.Services.GetRequiredService<WebhookDispatcher>();
        var port = new Uri(receiver.Url).Port;
        var view = new PredictionView
        {
            Id = "abc",
            Kind = PredictionKind.Replicate,
            Model = "black-forest-labs/flux-dev",
            Status = PredictionStatus.Succeeded,
            Input = "{}",
            CreatedAt = DateTimeOffset.UtcNow,
            BaseUrl = "http://localhost",
            Webhook = $"http://localhost:{port}/rebound",
            WebhookEvents = WebhookDispatcher.Events,
        };
        dispatcher.Send(view, "completed", "{}");
        await dispatcher.DrainAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(receiver.Deliveries);
    }

    [Theory]
    [InlineData(1, 12, 0.5, 2.4731)]
    [InlineData(12, 12, 95.0, 13.0)]
    [InlineData(37, 50, 3725.0, 0.01)]
    public void A_step_line_read_back_from_the_logs_is_the_progress_event_it_was_made_from(int step, int total, double seconds, double perSecond)
    {
        string line = PredictionService.ProgressLine(new GenerationProgress(GenerationStage.Denoising, step, total, TimeSpan.FromSeconds(seconds), perSecond));
        JsonElement progress = JsonDocument.Parse(PredictionService.ProgressOf(line)!).RootElement;
        Assert.Equal(("denoising", step, total), (progress.GetProperty("stage").GetString(), progress.GetProperty("step").GetInt32(), progress.GetProperty("total").GetInt32()));
        Assert.Equal(Math.Round(perSecond, 2), progress.GetProperty("steps_per_second").GetDouble());
        Assert.Null(PredictionService.ProgressOf("Using seed: 42"));
        Assert.Null(PredictionService.ProgressOf(line + " and more"));
    }

    internal static async Task<List<(string Event, string Data)>> ReadStreamAsync(HttpClient client, string path)
    {
        using HttpResponseMessage response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<(string, string)>();
        string? name = null, id = null;
        long lastId = 0;
        var data = new StringBuilder();
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0)
            {
                if (name is not null)
                {
                    // Every event has an increasing id (Replicate's Python client drops events without one).
                    Assert.NotNull(id);
                    long number = long.Parse(id, CultureInfo.InvariantCulture);
                    Assert.True(number > lastId);
                    lastId = number;
                    events.Add((name, data.ToString()));
                }

                name = null;
                id = null;
                data.Clear();
            }
            else if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                name = line["event: ".Length..];
            }
            else if (line.StartsWith("id: ", StringComparison.Ordinal))
            {
                id = line["id: ".Length..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data.Append(data.Length > 0 ? "\n" : string.Empty).Append(line["data: ".Length..]);
            }
        }

        return events;
    }
}

/// <summary>One request the webhook receiver got, and what it answered.</summary>
internal sealed record Delivery(string Path, string Id, string Timestamp, string Signature, string Event, string Body, int Status);

/// <summary>A local HTTP server that records webhook deliveries and fails the first few with 500.</summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication app;
    private readonly ConcurrentQueue<Delivery> deliveries = new();
    private int failuresLeft;

    private WebhookReceiver(int failFirst, Func<HttpContext, Task<int?>>? respond)
    {
        failuresLeft = failFirst;
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        app = builder.Build();
        app.MapPost("/{**path}", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            string body = await reader.ReadToEndAsync();
            int status = (respond is null ? null : await respond(context)) ?? (Interlocked.Decrement(ref failuresLeft) >= 0 ? 500 : 200);
            deliveries.Enqueue(new Delivery(
                context.Request.Path, context.Request.Headers["webhook-id"].ToString(), context.Request.Headers["webhook-timestamp"].ToString(),
                context.Request.Headers["webhook-signature"].ToString(), context.Request.Headers["webhook-event"].ToString(), body, status));
            return Results.StatusCode(status);
        });
    }

    public string Url { get; private set; } = string.Empty;

    public Delivery[] Deliveries => [.. deliveries];

    /// <summary>Starts a receiver that fails the first <paramref name="failFirst"/> deliveries, or answers what <paramref name="respond"/> says (null: as usual).</summary>
    public static async Task<WebhookReceiver> StartAsync(int failFirst, Func<HttpContext, Task<int?>>? respond = null)
    {
        var receiver = new WebhookReceiver(failFirst, respond);
        await receiver.app.StartAsync();
        receiver.Url = FluxServer.Addresses(receiver.app)[0];
        return receiver;
    }

    public async Task WaitAsync(Func<Delivery[], bool> done, TimeSpan timeout)
    {
        DateTime end = DateTime.UtcNow + timeout;
        while (!done(Deliveries))
        {
            Assert.True(DateTime.UtcNow < end, $"webhooks not delivered in time; got: {string.Join(", ", Deliveries.Select(d => $"{d.Path} {d.Event} {d.Status}"))}");
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync();
        await app.DisposeAsync();
    }
}
