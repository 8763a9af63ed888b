using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>The queue: cancel (waiting and running), the bound (429), the timeout, FIFO order, batching through the pipeline.</summary>
public sealed class SchedulingTests
{
    [Fact]
    public async Task Cancel_stops_a_running_generation_within_a_step()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        string id = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(id);

        var clock = Stopwatch.StartNew();
        Reply reply = await server.PostAsync($"/v1/predictions/{id}/cancel", "");
        clock.Stop();
        Assert.Equal(HttpStatusCode.OK, reply.Status);
        JsonElement p = reply.Json;
        Assert.Equal("canceled", p.GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.Null, p.GetProperty("output").ValueKind);
        // A step of this size takes about 0.3 s here; the token reaches into the native forward, so far less than 50 steps ran.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"cancel took {clock.Elapsed}");
        Assert.DoesNotContain("| 50/50 [", p.GetProperty("logs").GetString(), StringComparison.Ordinal);

        // Canceling again answers the same final state; the pipeline is free for the next one.
        Assert.Equal("canceled", (await server.PostAsync($"/v1/predictions/{id}/cancel", "")).Json.GetProperty("status").GetString());
        Reply next = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
        Assert.Equal("succeeded", next.Json.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Full_queue_answers_429_with_retry_after_and_a_waiting_prediction_cancels_without_running()
    {
        await using ServerHost server = await ServerHost.StartAsync(o => o with { QueueSize = 1 });
        string running = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(running);
        string waiting = await server.CreateAsync(ServerHost.QuickInput);

        Reply full = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""");
        full.AssertError(HttpStatusCode.TooManyRequests, "queue is full");
        Assert.True(int.Parse(full.Headers.RetryAfter!.ToString(), CultureInfo.InvariantCulture) >= 1);
        (await server.PostAsync("/v1/images/generations", """{"prompt":"x","size":"64x64"}""")).AssertError(HttpStatusCode.TooManyRequests, "queue is full");

        JsonElement canceled = (await server.PostAsync($"/v1/predictions/{waiting}/cancel", "")).Json;
        Assert.Equal("canceled", canceled.GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.Null, canceled.GetProperty("started_at").ValueKind);
        Assert.Equal(0, server.Predictions.QueueLength);

        // Room again.
        string after = await server.CreateAsync(ServerHost.QuickInput);
        await server.PostAsync($"/v1/predictions/{running}/cancel", "");
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(after)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Timeout_fails_the_prediction_and_the_openai_call_answers_504()
    {
        await using ServerHost server = await ServerHost.StartAsync(o => o with { RequestTimeout = TimeSpan.FromSeconds(1.5) });
        string id = await server.CreateAsync(ServerHost.LongInput);
        JsonElement p = await server.WaitFinishedAsync(id, 20);
        Assert.Equal("failed", p.GetProperty("status").GetString());
        Assert.Contains("timed out", p.GetProperty("error").GetString(), StringComparison.Ordinal);

        Reply openai = await server.PostAsync("/v1/images/generations", """{"prompt":"x","size":"1024x1024","num_inference_steps":50}""");
        openai.AssertError(HttpStatusCode.GatewayTimeout, "timed out");
    }

    [Fact]
    public async Task Predictions_run_one_at_a_time_in_fifo_order()
    {
        await using ServerHost server = await ServerHost.StartAsync(o => o with { MaxBatchImages = 1 });
        var ids = new List<string>();
        for (int k = 0; k < 5; k++)
        {
            ids.Add(await server.CreateAsync("""{"prompt":"order","image_size":128,"num_inference_steps":3}"""));
        }

        var finished = new List<JsonElement>();
        foreach (string id in ids)
        {
            finished.Add(await server.WaitFinishedAsync(id));
        }

        for (int k = 0; k < finished.Count; k++)
        {
            Assert.Equal("succeeded", finished[k].GetProperty("status").GetString());
            if (k > 0)
            {
                DateTimeOffset started = Time(finished[k], "started_at"), previousStarted = Time(finished[k - 1], "started_at");
                Assert.True(started >= previousStarted, "FIFO: started in the order created");
                // Never two in one forward: each starts its steps once the one before has done its own (its decode may
                // still run beside them: that overlap is the pipeline's).
                double previousDenoise = finished[k - 1].GetProperty("metrics").GetProperty("denoise_time").GetDouble();
                Assert.True(started >= previousStarted + TimeSpan.FromSeconds(previousDenoise) - TimeSpan.FromMilliseconds(50),
                    "each starts its steps after the one before finished its steps");
            }

            Assert.Equal(1, finished[k].GetProperty("metrics").GetProperty("batch_size").GetInt32());
        }
    }

    [Fact]
    public async Task Compatible_waiting_predictions_run_as_one_batch_with_the_images_they_would_get_alone()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        string blocker = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(blocker);
        const string First = """{"prompt":"first","image_size":64,"num_inference_steps":2,"seed":11,"output_format":"png"}""";
        string a = await server.CreateAsync(First);
        string b = await server.CreateAsync("""{"prompt":"second","image_size":64,"num_inference_steps":2,"seed":22,"num_outputs":2,"output_format":"png"}""");
        string other = await server.CreateAsync("""{"prompt":"other size","image_size":128,"num_inference_steps":2,"output_format":"png"}""");
        // The batch forms from what is ready when the blocker leaves: wait until every queued request is prepared
        // (on a loaded machine the preparing thread may lag the HTTP calls).
        Assert.True(SpinWait.SpinUntil(() => server.App.Services.GetRequiredService<ModelHost>().Pipeline.AllWaitingReady, TimeSpan.FromSeconds(30)));
        await server.PostAsync($"/v1/predictions/{blocker}/cancel", "");

        JsonElement pa = await server.WaitFinishedAsync(a), pb = await server.WaitFinishedAsync(b), po = await server.WaitFinishedAsync(other);
        Assert.All(new[] { pa, pb, po }, p => Assert.Equal("succeeded", p.GetProperty("status").GetString()));
        // batch_size: the most images in one forward (a's one and b's two).
        Assert.Equal(3, pa.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.Equal(3, pb.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.Equal(1, po.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.True((Time(pa, "started_at") - Time(pb, "started_at")).Duration() < TimeSpan.FromSeconds(1), "a and b start in the same step");
        double batchDenoise = pb.GetProperty("metrics").GetProperty("denoise_time").GetDouble();
        Assert.True(Time(po, "started_at") >= Time(pb, "started_at") + TimeSpan.FromSeconds(batchDenoise) - TimeSpan.FromMilliseconds(50),
            "the one of another size starts its steps after the batch's");
        Assert.Equal(2, pb.GetProperty("output").GetArrayLength());
        Assert.Contains("Batched with other predictions: up to 3 images per step", pa.GetProperty("logs").GetString(), StringComparison.Ordinal);

        // Image for image what each would have got alone: its own prompt and seed went with it.
        Reply alone = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{First}}}""", ("Prefer", "wait"));
        Assert.Equal(1, alone.Json.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        byte[] batched = await Pixels(server, pa.GetProperty("output")[0].GetString()!);
        byte[] single = await Pixels(server, alone.Json.GetProperty("output")[0].GetString()!);
        byte[] neighbour = await Pixels(server, pb.GetProperty("output")[0].GetString()!);
        Assert.True(MaxDifference(batched, single) <= 3, $"batched vs alone differ by {MaxDifference(batched, single)} levels");
        Assert.True(MaxDifference(batched, neighbour) > 20, "another prompt and seed give another image");
    }

    [Fact]
    public async Task Canceling_one_member_of_a_batch_leaves_the_others_to_finish()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        string blocker = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(blocker);
        const string Slow = """{"prompt":"batch","image_size":512,"num_inference_steps":40}""";
        string a = await server.CreateAsync(Slow), b = await server.CreateAsync(Slow);
        // The batch forms from what is ready when the blocker leaves: wait until every queued request is prepared
        // (on a loaded machine the preparing thread may lag the HTTP calls).
        Assert.True(SpinWait.SpinUntil(() => server.App.Services.GetRequiredService<ModelHost>().Pipeline.AllWaitingReady, TimeSpan.FromSeconds(30)));
        await server.PostAsync($"/v1/predictions/{blocker}/cancel", "");
        await server.WaitStepAsync(a);
        Assert.Equal("canceled", (await server.PostAsync($"/v1/predictions/{a}/cancel", "")).Json.GetProperty("status").GetString());
        JsonElement pb = await server.WaitFinishedAsync(b);
        Assert.Equal("succeeded", pb.GetProperty("status").GetString());
        Assert.Equal(2, pb.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.Equal("canceled", (await server.GetAsync($"/v1/predictions/{a}")).Json.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Without_demo_a_prompt_alone_is_refused_because_there_are_no_text_encoders()
    {
        FluxPipelineSources tiny = ModelHost.WriteDemoModels(ServerHost.DemoDirectory);
        await using ServerHost server = await ServerHost.StartAsync(o => o with { Demo = false, Model = tiny, Pipeline = DemoModels.Options, MinImageSide = 64 });
        Reply reply = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""");
        reply.AssertError(HttpStatusCode.UnprocessableEntity, "text encoders", "input.prompt");
        Reply openai = await server.PostAsync("/v1/images/generations", """{"prompt":"a cat","size":"64x64"}""");
        openai.AssertError(HttpStatusCode.BadRequest, "text encoders", "prompt");
        Assert.Equal(0, server.Predictions.QueueLength);
    }

    private static async Task<byte[]> Pixels(ServerHost server, string url)
    {
        byte[] file = await server.Client.GetByteArrayAsync(url);
        return Images.Decode(file, out _).Rgb;
    }

    private static int MaxDifference(byte[] x, byte[] y)
    {
        Assert.Equal(x.Length, y.Length);
        int max = 0;
        for (int i = 0; i < x.Length; i++)
        {
            max = Math.Max(max, Math.Abs(x[i] - y[i]));
        }

        return max;
    }

    private static DateTimeOffset Time(JsonElement p, string name) =>
        DateTimeOffset.Parse(p.GetProperty(name).GetString()!, CultureInfo.InvariantCulture);
}
