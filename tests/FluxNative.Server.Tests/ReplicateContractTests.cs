using System.Diagnostics;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Server.Tests;

/// <summary>
/// Replicate's API exactly: inputs this engine does not implement are refused (422, naming each), never dropped; the
/// model must be the one served (404 otherwise); a bad cursor is 400; the model answers with its input schema, which
/// is what the parser accepts; file URLs answer HEAD; Cancel-After cancels.
/// </summary>
public sealed class ReplicateContractTests : IAsyncLifetime
{
    private const string ModelPath = "/v1/models/black-forest-labs/flux-dev/predictions";

    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Theory]
    [InlineData("image", "\"https://example.com/in.png\"", "does not fetch image URLs")]
    [InlineData("input_image", "\"data:image/png;base64,AAAA\"", "Kontext")]
    [InlineData("strength", "0.8", "prompt_strength")]
    [InlineData("image_prompt", "\"https://example.com/in.png\"", "Redux")]
    [InlineData("mask", "\"https://example.com/mask.png\"", "inpainting")]
    [InlineData("lora_weights", "\"fofr/flux-80s\"", "LoRA")]
    [InlineData("lora_scale", "1", "LoRA")]
    [InlineData("safety_tolerance", "2", "no safety filter")]
    [InlineData("prompt_upsampling", "true", "prompt upsampling")]
    [InlineData("steps", "25", "num_inference_steps")]
    [InlineData("negative_prompt", "\"blurry\"", "no negative prompt")]
    public async Task Unimplemented_inputs_are_422_naming_the_field(string name, string value, string reason)
    {
        foreach ((string path, string body) in new[]
        {
            (ModelPath, $$$"""{"input":{"prompt":"x","{{{name}}}":{{{value}}}}}"""),
            ("/v1/predictions", $$$"""{"version":"abc","input":{"prompt":"x","{{{name}}}":{{{value}}}}}"""),
        })
        {
            Reply reply = await server.PostAsync(path, body);
            reply.AssertError(HttpStatusCode.UnprocessableEntity, reason, $"input.{name}");
            JsonElement invalid = Assert.Single(reply.Json.GetProperty("invalid_fields").EnumerateArray());
            Assert.Equal("unsupported", invalid.GetProperty("type").GetString());
            Assert.Equal("Input validation failed", reply.Json.GetProperty("title").GetString());
        }

        Assert.Equal(0, server.Predictions.QueueLength);
    }

    [Fact]
    public async Task An_image_as_a_data_uri_runs_image_to_image_at_its_size()
    {
        var rgb = new byte[96 * 64 * 3];
        for (int i = 0; i < rgb.Length; i++)
        {
            rgb[i] = (byte)(i * 7 % 256);
        }

        string uri = "data:image/png;base64," + Convert.ToBase64String(Images.Encode(rgb, 96, 64, ImageFormat.Png));
        Reply reply = await server.PostAsync(ModelPath,
            $$$"""{"input":{"prompt":"x","image":"{{{uri}}}","prompt_strength":0.5,"num_inference_steps":4,"output_format":"png"}}""", ("Prefer", "wait"));
        Assert.True(reply.Json.GetProperty("status").GetString() == "succeeded", reply.Text);
        byte[] file = await server.Client.GetByteArrayAsync(reply.Json.GetProperty("output")[0].GetString());
        RgbImage image = Images.Decode(file, out _);
        Assert.Equal((96, 64), (image.Width, image.Height));
        Assert.Contains("2/2 [", reply.Json.GetProperty("logs").GetString(), StringComparison.Ordinal);   // steps 3 and 4 of 4

        (await server.PostAsync(ModelPath, """{"input":{"prompt":"x","prompt_strength":0.5}}""")).AssertError(HttpStatusCode.UnprocessableEntity, "image", "input.prompt_strength");
        (await server.PostAsync(ModelPath, $$$"""{"input":{"prompt":"x","image":"{{{uri}}}","prompt_strength":1.5}}""")).AssertError(HttpStatusCode.UnprocessableEntity, "strength", "input.prompt_strength");
        (await server.PostAsync(ModelPath, """{"input":{"prompt":"x","image":"data:image/png;base64,!!!"}}""")).AssertError(HttpStatusCode.UnprocessableEntity, "base64", "input.image");
        (await server.PostAsync(ModelPath, """{"input":{"prompt":"x","image":"data:image/png;base64,AAAA"}}""")).AssertError(HttpStatusCode.UnprocessableEntity, "PNG, JPEG or WebP", "input.image");
        (await server.PostAsync(ModelPath, """{"input":{"prompt":"x","image":"in.png"}}""")).AssertError(HttpStatusCode.UnprocessableEntity, "data: URI", "input.image");
        Assert.Equal(0, server.Predictions.QueueLength);
    }

    [Fact]
    public async Task Every_refused_field_is_named_in_one_answer()
    {
        Reply reply = await server.PostAsync(ModelPath, """{"input":{"prompt":"x","input_image":"a.png","mask":"m.png","promt":"typo"}}""");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, reply.Status);
        JsonElement[] fields = [.. reply.Json.GetProperty("invalid_fields").EnumerateArray()];
        Assert.Equal(["input.input_image", "input.mask", "input.promt"], fields.Select(f => f.GetProperty("field").GetString()));
        Assert.Equal(["unsupported", "unsupported", "unknown"], fields.Select(f => f.GetProperty("type").GetString()));
        string detail = reply.Json.GetProperty("detail").GetString()!;
        Assert.Contains("- input.input_image: ", detail, StringComparison.Ordinal);
        Assert.Contains("- input.promt: input.promt is not an input of this model (they are: ", detail, StringComparison.Ordinal);

        Reply top = await server.PostAsync(ModelPath, """{"inputs":{"prompt":"x"},"input":{"prompt":"x"}}""");
        top.AssertError(HttpStatusCode.UnprocessableEntity, "inputs is not a field of a prediction request", "inputs");
    }

    [Fact]
    public async Task Values_that_ask_for_nothing_are_accepted_and_a_missing_safety_checker_is_said()
    {
        Reply reply = await server.PostAsync(ModelPath,
            """{"input":{"prompt":"x","image_size":64,"num_inference_steps":1,"image":null,"prompt_upsampling":false,"disable_safety_checker":false}}""",
            ("Prefer", "wait"));
        Assert.True(reply.Status == HttpStatusCode.Created, reply.Text);
        Assert.Equal("succeeded", reply.Json.GetProperty("status").GetString());
        Assert.Contains("no safety checker", reply.Json.GetProperty("logs").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/v1/models/foo/bar/predictions", """{"input":{"prompt":"x"}}""")]
    [InlineData("/v1/models/black-forest-labs/flux-schnell/predictions", """{"input":{"prompt":"x"}}""")]
    [InlineData("/v1/models/black-forest-labs/flux-dev-lora/predictions", """{"input":{"prompt":"x"}}""")]
    [InlineData("/v1/predictions", """{"version":"black-forest-labs/flux-schnell:abc123","input":{"prompt":"x"}}""")]
    [InlineData("/v1/predictions", """{"version":"foo/bar","input":{"prompt":"x"}}""")]
    [InlineData("/v1/predictions", """{"version":"foo/bar baz:1","input":{"prompt":"x"}}""")]
    public async Task A_model_that_is_not_served_is_404(string path, string body)
    {
        Reply reply = await server.PostAsync(path, body);
        reply.AssertError(HttpStatusCode.NotFound, "No model");
        Assert.Contains("black-forest-labs/flux-dev", reply.Json.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, server.Predictions.QueueLength);
    }

    [Fact]
    public async Task Configured_model_names_are_served_and_recorded()
    {
        await using ServerHost named = await ServerHost.StartAsync(o => o with { ModelNames = ["acme/house-flux", "black-forest-labs/flux-dev"] });
        Reply own = await named.PostAsync("/v1/models/ACME/house-flux/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""");
        Assert.True(own.Status == HttpStatusCode.Created, own.Text);
        Assert.Equal("acme/house-flux", own.Json.GetProperty("model").GetString());
        Reply bare = await named.PostAsync("/v1/predictions", $$"""{"version":"0123","input":{{ServerHost.QuickInput}}}""");
        Assert.Equal("acme/house-flux", bare.Json.GetProperty("model").GetString());
        (await named.PostAsync("/v1/models/black-forest-labs/flux-schnell/predictions", $$"""{"input":{{ServerHost.QuickInput}}}"""))
            .AssertError(HttpStatusCode.NotFound, "it serves acme/house-flux, black-forest-labs/flux-dev");
    }

    [Theory]
    [InlineData("nosuchprediction")]
    [InlineData("..%2F..%2Fetc")]
    [InlineData("ABC")]
    public async Task A_cursor_the_server_did_not_hand_out_is_400(string cursor)
    {
        (await server.GetAsync($"/v1/predictions?cursor={cursor}")).AssertError(HttpStatusCode.BadRequest, "not a cursor this server handed out", "cursor");
    }

    [Fact]
    public async Task A_cursor_of_a_listed_prediction_pages_on()
    {
        string first = await server.CreateAsync(ServerHost.QuickInput);
        string second = await server.CreateAsync(ServerHost.QuickInput);
        JsonElement page = (await server.GetAsync($"/v1/predictions?cursor={second}")).Json;
        Assert.Equal([first], page.GetProperty("results").EnumerateArray().Select(p => p.GetProperty("id").GetString()));
    }

    [Fact]
    public async Task The_model_answers_with_its_input_schema()
    {
        Reply reply = await server.GetAsync("/v1/models/black-forest-labs/flux-dev");
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        JsonElement model = reply.Json;
        Assert.Equal("black-forest-labs", model.GetProperty("owner").GetString());
        Assert.Equal("flux-dev", model.GetProperty("name").GetString());
        JsonElement version = model.GetProperty("latest_version");
        Assert.Matches("^[0-9a-f]{64}$", version.GetProperty("id").GetString());
        JsonElement input = version.GetProperty("openapi_schema").GetProperty("components").GetProperty("schemas").GetProperty("Input");
        Assert.Equal(["prompt"], input.GetProperty("required").EnumerateArray().Select(r => r.GetString()));
        JsonElement properties = input.GetProperty("properties");
        Assert.Equal(28, properties.GetProperty("num_inference_steps").GetProperty("default").GetInt32());   // the demo's model is dev
        Assert.Equal(64, properties.GetProperty("image_size").GetProperty("minimum").GetInt32());
        Assert.Equal(2048, properties.GetProperty("image_size").GetProperty("maximum").GetInt32());
        Assert.Contains("16:9", properties.GetProperty("aspect_ratio").GetProperty("enum").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("uri", properties.GetProperty("image").GetProperty("format").GetString());
        Assert.Equal(0.8, properties.GetProperty("prompt_strength").GetProperty("default").GetDouble());
        Assert.False(properties.GetProperty("go_fast").GetProperty("default").GetBoolean());
        Assert.Equal(["default", "lossless", "juiced", "extra_juiced", "fastest"],
            properties.GetProperty("speed_mode").GetProperty("enum").EnumerateArray().Select(e => e.GetString()));

        (await server.GetAsync("/v1/models/foo/bar")).AssertError(HttpStatusCode.NotFound, "No model 'foo/bar'");
        (await server.GetAsync("/v1/models/black-forest-labs/flux-schnell")).AssertError(HttpStatusCode.NotFound, "No model");
    }

    [Fact]
    public async Task Every_input_of_the_schema_is_accepted_and_nothing_else()
    {
        JsonElement properties = (await server.GetAsync("/v1/models/black-forest-labs/flux-dev")).Json
            .GetProperty("latest_version").GetProperty("openapi_schema").GetProperty("components").GetProperty("schemas").GetProperty("Input").GetProperty("properties");
        var ids = new List<string>();
        foreach (JsonProperty property in properties.EnumerateObject())
        {
            // A value the schema allows: its minimum, else its default, else its first choice.
            JsonElement schema = property.Value;
            JsonNode? value = schema.TryGetProperty("minimum", out JsonElement min) ? JsonValue.Create(min.GetDouble())
                : schema.TryGetProperty("default", out JsonElement fallback) ? JsonNode.Parse(fallback.GetRawText())
                : schema.TryGetProperty("enum", out JsonElement choices) ? JsonNode.Parse(choices[0].GetRawText())
                : JsonValue.Create("a fox");
            var input = new JsonObject { ["prompt"] = "x", ["image_size"] = 64, ["num_inference_steps"] = 1 };
            input[property.Name] = value;
            if (property.Name is "width" or "height")
            {
                (input["width"], input["height"], input["image_size"]) = (64, 64, null);
            }

            if (property.Name is "image" or "prompt_strength")
            {
                // Image-to-image: a real picture (the strength needs one), at the size it gives.
                input["image"] = "data:image/png;base64," + Convert.ToBase64String(Images.Encode(new byte[64 * 64 * 3], 64, 64, ImageFormat.Png));
                input["image_size"] = null;
            }

            Reply reply = await server.PostAsync(ModelPath, new JsonObject { ["input"] = input }.ToJsonString());
            Assert.True(reply.Status == HttpStatusCode.Created, $"{property.Name} = {value?.ToJsonString()}: {reply.Text}");
            ids.Add(reply.Json.GetProperty("id").GetString()!);
        }

        Assert.True(ids.Count >= 14, $"only {ids.Count} inputs in the schema");
        foreach (string id in ids)
        {
            await server.WaitFinishedAsync(id);
        }
    }

    [Fact]
    public async Task Output_files_answer_head()
    {
        Reply reply = await server.PostAsync(ModelPath, $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
        string url = reply.Json.GetProperty("output")[0].GetString()!;
        using var get = new HttpRequestMessage(HttpMethod.Get, url);
        using HttpResponseMessage full = await server.Client.SendAsync(get);
        byte[] bytes = await full.Content.ReadAsByteArrayAsync();

        using var head = new HttpRequestMessage(HttpMethod.Head, url);
        using HttpResponseMessage response = await server.Client.SendAsync(head);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/webp", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(bytes.Length, response.Content.Headers.ContentLength);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());

        using var missing = new HttpRequestMessage(HttpMethod.Head, "/v1/files/abc/out-0.png");
        Assert.Equal(HttpStatusCode.NotFound, (await server.Client.SendAsync(missing)).StatusCode);
    }

    [Theory]
    [InlineData("5", 5.0)]
    [InlineData("30s", 30.0)]
    [InlineData("5m", 300.0)]
    [InlineData("1h30m45s", 5445.0)]
    [InlineData("1d", 86400.0)]
    [InlineData("1m30", 90.0)]
    [InlineData("7.5s", 7.5)]
    [InlineData("4500ms", null)]
    [InlineData("4s", null)]
    [InlineData("soon", null)]
    [InlineData("-5s", null)]
    [InlineData("5 s", null)]
    [InlineData("10y", null)]
    [InlineData("30s5", 35.0)]
    [InlineData("400d", null)]
    [InlineData("99999999999999999999999h", null)]
    public void Cancel_after_durations(string header, double? seconds)
    {
        if (seconds is { } expected)
        {
            Assert.Equal(TimeSpan.FromSeconds(expected), CancelAfter.Parse(header));
        }
        else
        {
            var e = Assert.Throws<ApiException>(() => CancelAfter.Parse(header));
            Assert.Equal("Cancel-After", e.Field);
        }
    }

    [Fact]
    public async Task Cancel_after_cancels_the_prediction_in_time()
    {
        var clock = Stopwatch.StartNew();
        string id = await server.CreateAsync(ServerHost.LongInput, "", ("Cancel-After", "5s"));
        JsonElement final = await server.WaitFinishedAsync(id, 30);
        Assert.Equal("canceled", final.GetProperty("status").GetString());
        Assert.InRange(clock.Elapsed.TotalSeconds, 4.5, 15);
        Assert.Contains("Cancel-After (5 s) reached", final.GetProperty("logs").GetString(), StringComparison.Ordinal);

        (await server.PostAsync(ModelPath, $$"""{"input":{{ServerHost.QuickInput}}}""", ("Cancel-After", "2s")))
            .AssertError(HttpStatusCode.BadRequest, "at least 5 s", "Cancel-After");
    }
}
