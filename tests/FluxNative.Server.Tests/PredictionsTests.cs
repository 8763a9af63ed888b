using System.Net;
using System.Text.Json;

namespace FluxNative.Server.Tests;

/// <summary>Replicate's predictions API on the test host: create, get, list, wait, errors.</summary>
public sealed class PredictionsTests : IAsyncLifetime
{
    private const string ModelPath = "/v1/models/black-forest-labs/flux-dev/predictions";

    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Fact]
    public async Task Model_endpoint_with_prefer_wait_answers_the_finished_prediction()
    {
        Reply reply = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions",
            """{"input":{"prompt":"a harbour at dusk","aspect_ratio":"3:2","image_size":96,"num_inference_steps":2,"guidance":3,"seed":42,"output_format":"jpg","output_quality":90,"num_outputs":2}}""",
            ("Prefer", "wait"));
        Assert.True(reply.Status == HttpStatusCode.Created, reply.Text);
        JsonElement p = reply.Json;
        string id = p.GetProperty("id").GetString()!;
        Assert.Equal("succeeded", p.GetProperty("status").GetString());
        Assert.Equal("black-forest-labs/flux-dev", p.GetProperty("model").GetString());
        Assert.Equal("a harbour at dusk", p.GetProperty("input").GetProperty("prompt").GetString());
        Assert.Equal(JsonValueKind.Null, p.GetProperty("error").ValueKind);
        Assert.Contains("Using seed: 42", p.GetProperty("logs").GetString(), StringComparison.Ordinal);
        Assert.Contains("100%|██████████| 2/2 [", p.GetProperty("logs").GetString(), StringComparison.Ordinal);
        Assert.True(p.GetProperty("metrics").GetProperty("predict_time").GetDouble() > 0);
        Assert.Equal(42, p.GetProperty("metrics").GetProperty("seed").GetInt64());
        foreach (string time in new[] { "created_at", "started_at", "completed_at" })
        {
            Assert.EndsWith("Z", p.GetProperty(time).GetString(), StringComparison.Ordinal);
        }

        JsonElement urls = p.GetProperty("urls");
        Assert.Equal($"http://localhost/v1/predictions/{id}", urls.GetProperty("get").GetString());
        Assert.Equal($"http://localhost/v1/predictions/{id}/cancel", urls.GetProperty("cancel").GetString());
        Assert.Equal($"http://localhost/v1/predictions/{id}/stream", urls.GetProperty("stream").GetString());

        string[] outputs = [.. p.GetProperty("output").EnumerateArray().Select(o => o.GetString()!)];
        Assert.Equal(2, outputs.Length);
        foreach (string url in outputs)
        {
            using HttpResponseMessage file = await server.Client.GetAsync(url);
            Assert.Equal("image/jpeg", file.Content.Headers.ContentType?.MediaType);
            RgbImage image = Images.Decode(await file.Content.ReadAsByteArrayAsync(), out ImageFormat format);
            Assert.Equal(ImageFormat.Jpeg, format);
            Assert.Equal((96, 64), (image.Width, image.Height));
        }

        // GET answers the same prediction.
        JsonElement again = (await server.GetAsync($"/v1/predictions/{id}")).Json;
        Assert.Equal("succeeded", again.GetProperty("status").GetString());
        Assert.Equal(outputs, again.GetProperty("output").EnumerateArray().Select(o => o.GetString()!));
    }

    [Fact]
    public async Task Versioned_create_starts_and_can_be_polled_to_success()
    {
        Reply reply = await server.PostAsync("/v1/predictions",
            $$"""{"version":"black-forest-labs/flux-dev:abc123","input":{{ServerHost.QuickInput}}}""");
        Assert.True(reply.Status == HttpStatusCode.Created, reply.Text);
        JsonElement created = reply.Json;
        Assert.Contains(created.GetProperty("status").GetString(), new[] { "starting", "processing", "succeeded" });
        Assert.Equal("black-forest-labs/flux-dev", created.GetProperty("model").GetString());
        Assert.Equal("abc123", created.GetProperty("version").GetString());
        Assert.EndsWith($"/v1/predictions/{created.GetProperty("id").GetString()}", reply.Headers.Location?.ToString(), StringComparison.Ordinal);

        JsonElement done = await server.WaitFinishedAsync(created.GetProperty("id").GetString()!);
        Assert.Equal("succeeded", done.GetProperty("status").GetString());
        Assert.EndsWith(".webp", new Uri(done.GetProperty("output")[0].GetString()!).AbsolutePath, StringComparison.Ordinal);   // Replicate's default
    }

    [Fact]
    public async Task Prefer_wait_with_seconds_and_list()
    {
        Reply reply = await server.PostAsync("/v1/predictions", $$"""{"version":"any","input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait=20"));
        Assert.Equal("succeeded", reply.Json.GetProperty("status").GetString());
        Assert.Equal("black-forest-labs/flux-dev", reply.Json.GetProperty("model").GetString());   // a bare version id runs the served model

        JsonElement list = (await server.GetAsync("/v1/predictions")).Json;
        Assert.Contains(list.GetProperty("results").EnumerateArray(), p => p.GetProperty("id").GetString() == reply.Json.GetProperty("id").GetString());
        Assert.Equal(JsonValueKind.Null, list.GetProperty("next").ValueKind);
    }

    [Fact]
    public async Task Speed_modes_run_by_name_or_label_and_unknown_ones_are_422()
    {
        Reply unknown = await server.PostAsync(ModelPath, """{"input":{"prompt":"x","speed_mode":"turbo"}}""");
        unknown.AssertError(HttpStatusCode.UnprocessableEntity, "must be one of lossless, juiced, extra_juiced, fastest", "input.speed_mode");

        Reply both = await server.PostAsync(ModelPath, """{"input":{"prompt":"x","speed_mode":"fastest","go_fast":true}}""");
        both.AssertError(HttpStatusCode.UnprocessableEntity, "not both", "input.go_fast");

        foreach (string input in new[]
        {
            "\"speed_mode\":\"Extra Juiced 🚀 (even more speed)\"",
            "\"speed_mode\":\"fastest\"",
            "\"go_fast\":true",
            "\"speed_mode\":\"default\"",
        })
        {
            Reply fine = await server.PostAsync(ModelPath,
                $$$"""{"input":{"prompt":"x",{{{input}}},"image_size":64,"num_inference_steps":6}}""", ("Prefer", "wait"));
            Assert.Equal("succeeded", fine.Json.GetProperty("status").GetString());
            double share = fine.Json.GetProperty("metrics").GetProperty("transformer_blocks_share").GetDouble();
            Assert.InRange(share, 0.0, 1.0);
            if (input.Contains("default", StringComparison.Ordinal))
            {
                Assert.Equal(1.0, share);
            }
            else
            {
                Assert.Contains("transformer blocks ran", fine.Json.GetProperty("logs").GetString(), StringComparison.Ordinal);
            }
        }
    }

    [Theory]
    [InlineData("/v1/predictions", """{"input":{"prompt":"x"}}""", "version is required", "version")]
    [InlineData("/v1/predictions", """{"version":5,"input":{"prompt":"x"}}""", "version must be a string", "version")]
    [InlineData(ModelPath, """{"prompt":"x"}""", "prompt is not a field of a prediction request (inputs go in input", "prompt")]
    [InlineData(ModelPath, """{"webhook":"https://example.com/h"}""", "input is required", "input")]
    [InlineData(ModelPath, """{"input":"a cat"}""", "input must be an object", "input")]
    [InlineData(ModelPath, """{"input":{}}""", "input.prompt is required", "input.prompt")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","num_inference_steps":"many"}}""", "input.num_inference_steps must be an integer", "input.num_inference_steps")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","num_inference_steps":51}}""", "steps must be between 1 and 50", "input.num_inference_steps")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","num_outputs":11}}""", "input.num_outputs must be between 1 and 10", "input.num_outputs")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","output_format":"bmp"}}""", "input.output_format must be webp, jpg or png", "input.output_format")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","aspect_ratio":"custom"}}""", "needs input.width and input.height", "input.aspect_ratio")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","width":64}}""", "Give both width and height", "input.height")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","image_size":32}}""", "image_size must be between 64 and 2048", "input.image_size")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","seed":"lucky"}}""", "input.seed must be an integer", "input.seed")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","megapixels":"4"}}""", "input.megapixels must be", "input.megapixels")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook":"ftp://example.com/x"}""", "absolute http or https URL", "webhook")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook":"http://127.0.0.1:9/hook"}""", "loopback, link-local or private", "webhook")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook":"http://10.1.2.3/hook"}""", "loopback, link-local or private", "webhook")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook":"http://localhost/hook"}""", "loopback, link-local or private", "webhook")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook":"https://example.com/h","webhook_events_filter":["finished"]}""", "webhook_events_filter may hold only", "webhook_events_filter")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook_events_filter":"completed"}""", "webhook_events_filter must be an array", "webhook_events_filter")]
    public async Task Bad_creates_are_422_naming_the_field(string path, string body, string message, string field)
    {
        // Replicate answers invalid input with 422 "Input validation failed" and the fields in invalid_fields.
        Reply reply = await server.PostAsync(path, body);
        reply.AssertError(HttpStatusCode.UnprocessableEntity, message, field);
        Assert.Equal("Input validation failed", reply.Json.GetProperty("title").GetString());
        Assert.Equal(field, reply.Json.GetProperty("invalid_fields")[0].GetProperty("field").GetString());
    }

    [Fact]
    public async Task Prefer_wait_on_a_get_answers_when_the_prediction_is_finished()
    {
        string id = await server.CreateAsync("""{"prompt":"a fox","image_size":256,"num_inference_steps":8}""");
        Reply waited = await server.SendAsync(HttpMethod.Get, $"/v1/predictions/{id}", null, ("Prefer", "wait=30"));
        Assert.Equal(HttpStatusCode.OK, waited.Status);
        Assert.Equal("succeeded", waited.Json.GetProperty("status").GetString());

        Reply bad = await server.SendAsync(HttpMethod.Get, $"/v1/predictions/{id}", null, ("Prefer", "wait=600"));
        bad.AssertError(HttpStatusCode.BadRequest, "Prefer: wait=N needs N between 1 and 60");
        Reply unknown = await server.SendAsync(HttpMethod.Get, "/v1/predictions/nosuchprediction", null, ("Prefer", "wait=5"));
        Assert.Equal(HttpStatusCode.NotFound, unknown.Status);
    }

    [Fact]
    public async Task Bad_prefer_header_and_model_names()
    {
        Reply wait = await server.PostAsync(ModelPath, $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait=600"));
        wait.AssertError(HttpStatusCode.BadRequest, "Prefer: wait=N needs N between 1 and 60");

        Reply name = await server.PostAsync("/v1/models/a%20b/c/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""");
        name.AssertError(HttpStatusCode.NotFound, "No model");
    }

    [Fact]
    public async Task Unknown_ids_are_404()
    {
        (await server.GetAsync("/v1/predictions/nosuchprediction")).AssertError(HttpStatusCode.NotFound, "No prediction with id 'nosuchprediction'");
        (await server.PostAsync("/v1/predictions/nosuchprediction/cancel", "")).AssertError(HttpStatusCode.NotFound, "No prediction");
        (await server.GetAsync("/v1/predictions/nosuchprediction/stream")).AssertError(HttpStatusCode.NotFound, "No prediction");
        (await server.GetAsync("/v1/files/abc/out-0.png")).AssertError(HttpStatusCode.NotFound, "No output file");
        (await server.GetAsync("/v1/files/abc/..%2Fflux.db")).AssertError(HttpStatusCode.NotFound, "No output file");
    }

    [Fact]
    public async Task Webhook_secret_is_a_standard_webhooks_secret()
    {
        JsonElement secret = (await server.GetAsync("/v1/webhooks/default/secret")).Json;
        string key = secret.GetProperty("key").GetString()!;
        Assert.StartsWith("whsec_", key, StringComparison.Ordinal);
        Assert.Equal(32, Convert.FromBase64String(key["whsec_".Length..]).Length);
    }
}
