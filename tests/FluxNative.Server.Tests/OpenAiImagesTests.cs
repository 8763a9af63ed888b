using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.TestHost;

namespace FluxNative.Server.Tests;

/// <summary>OpenAI's <c>POST /v1/images/generations</c> on the test host.</summary>
public sealed class OpenAiImagesTests : IAsyncLifetime
{
    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Fact]
    public async Task Url_response_points_at_a_png_the_server_serves_without_the_key()
    {
        Reply reply = await server.PostAsync("/v1/images/generations",
            """{"model":"flux-dev","prompt":"a lighthouse","size":"64x64","num_inference_steps":2,"guidance":4.5,"seed":7}""");
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        JsonElement body = reply.Json;
        Assert.True(body.GetProperty("created").GetInt64() > 1_600_000_000);
        Assert.Equal("64x64", body.GetProperty("size").GetString());
        Assert.Equal(7, body.GetProperty("seed").GetInt64());
        JsonElement data = Assert.Single(body.GetProperty("data").EnumerateArray());
        string url = data.GetProperty("url").GetString()!;
        Assert.StartsWith("http://localhost/v1/files/", url, StringComparison.Ordinal);

        // A signed URL needs no key (as an OpenAI image URL), a tampered one is refused.
        using var anonymous = new HttpClient(server.App.GetTestServer().CreateHandler()) { BaseAddress = server.Client.BaseAddress };
        using HttpResponseMessage image = await anonymous.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, image.StatusCode);
        Assert.Equal("image/png", image.Content.Headers.ContentType?.MediaType);
        byte[] png = await image.Content.ReadAsByteArrayAsync();
        RgbImage decoded = Images.Decode(png, out ImageFormat format);
        Assert.Equal(ImageFormat.Png, format);
        Assert.Equal((64, 64), (decoded.Width, decoded.Height));

        using HttpResponseMessage tampered = await anonymous.GetAsync(url[..^3] + "AAA");
        Assert.Equal(HttpStatusCode.Unauthorized, tampered.StatusCode);

        // Same seed, same prompt, same request: the same image.
        Reply again = await server.PostAsync("/v1/images/generations",
            """{"model":"flux-dev","prompt":"a lighthouse","size":"64x64","num_inference_steps":2,"guidance":4.5,"seed":7,"response_format":"b64_json"}""");
        byte[] second = Convert.FromBase64String(again.Json.GetProperty("data")[0].GetProperty("b64_json").GetString()!);
        Assert.Equal(png, second);
    }

    [Theory]
    [InlineData("jpeg", ImageFormat.Jpeg)]
    [InlineData("webp", ImageFormat.Webp)]
    [InlineData("png", ImageFormat.Png)]
    public async Task B64_json_in_each_output_format(string name, ImageFormat expected)
    {
        Reply reply = await server.PostAsync("/v1/images/generations",
            $$"""{"prompt":"a kite","n":2,"size":"64x64","num_inference_steps":1,"response_format":"b64_json","output_format":"{{name}}","output_compression":70}""");
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        JsonElement[] data = [.. reply.Json.GetProperty("data").EnumerateArray()];
        Assert.Equal(2, data.Length);
        foreach (JsonElement item in data)
        {
            byte[] file = Convert.FromBase64String(item.GetProperty("b64_json").GetString()!);
            Images.Decode(file, out ImageFormat format);
            Assert.Equal(expected, format);
        }
    }

    [Theory]
    [InlineData("""{"aspect_ratio":"16:9","resolution":"128"}""", "128x80")]
    [InlineData("""{"aspect_ratio":"5:2","resolution":256}""", "256x112")]        // not supported: the nearest, 21:9
    [InlineData("""{"aspect_ratio":"16:9","resolution":"0.125K"}""", "128x80")]
    [InlineData("""{"size":"96x64","aspect_ratio":"9:16","resolution":"1K"}""", "96x64")]   // size wins
    [InlineData("""{"resolution":"64"}""", "64x64")]
    public async Task Size_or_aspect_ratio_and_resolution(string sizing, string expected)
    {
        string body = sizing.TrimEnd('}') + ""","prompt":"a field","num_inference_steps":1,"response_format":"b64_json"}""";
        Reply reply = await server.PostAsync("/v1/images/generations", body);
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        Assert.Equal(expected, reply.Json.GetProperty("size").GetString());
    }

    [Fact]
    public async Task A_mapped_aspect_ratio_is_logged_on_the_prediction()
    {
        Reply reply = await server.PostAsync("/v1/images/generations",
            """{"prompt":"x","aspect_ratio":"5:2","resolution":256,"num_inference_steps":1}""");
        string id = reply.Json.GetProperty("id").GetString()!;
        JsonElement prediction = (await server.GetAsync($"/v1/predictions/{id}")).Json;
        Assert.Contains("nearest supported ratio, 21:9", prediction.GetProperty("logs").GetString(), StringComparison.Ordinal);
        Assert.Equal("openai", prediction.GetProperty("source").GetString());
    }

    [Theory]
    [InlineData("""{"prompt":"x","n":"two"}""", "n must be an integer", "n")]
    [InlineData("""{"prompt":"x","n":20}""", "n must be between 1 and 10", "n")]
    [InlineData("""{"prompt":"x","n":1.5}""", "n must be an integer", "n")]
    [InlineData("""{"prompt":"x","size":"big"}""", "size must be WIDTHxHEIGHT", "size")]
    [InlineData("""{"prompt":"x","size":"8000x64"}""", "between 64 and 2048", "size")]
    [InlineData("""{"prompt":"x","size":17}""", "size must be a string", "size")]
    [InlineData("""{"prompt":"x","response_format":"gif"}""", "response_format must be url or b64_json", "response_format")]
    [InlineData("""{"prompt":"x","output_format":"gif"}""", "output_format must be png, jpeg or webp", "output_format")]
    [InlineData("""{"prompt":"x","output_compression":101}""", "output_compression must be between 0 and 100", "output_compression")]
    [InlineData("""{"prompt":"x","num_inference_steps":0,"size":"64x64"}""", "steps must be between 1 and 50", "num_inference_steps")]
    [InlineData("""{"prompt":"x","guidance":11,"size":"64x64"}""", "guidance must be between 0 and 10", "guidance")]
    [InlineData("""{"prompt":"x","guidance":"high"}""", "guidance must be a number", "guidance")]
    [InlineData("""{"prompt":"x","seed":-5,"size":"64x64"}""", "seed must be -1", "seed")]
    [InlineData("""{"prompt":"x","aspect_ratio":"wide"}""", "aspect_ratio must be a ratio W:H", "aspect_ratio")]
    [InlineData("""{"prompt":"x","resolution":"huge"}""", "resolution must be a tier", "resolution")]
    [InlineData("""{"prompt":"x","resolution":"4K"}""", "image_size must be between 64 and 2048", "resolution")]
    [InlineData("""{"prompt":""}""", "prompt is required", "prompt")]
    [InlineData("""{"size":"64x64"}""", "prompt is required", "prompt")]
    [InlineData("""{"prompt":["a","b"]}""", "prompt must be a string", "prompt")]
    [InlineData("""{"prompt":"x","model":7}""", "model must be a string", "model")]
    public async Task Bad_values_are_400_with_the_field(string body, string message, string field)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", body);
        reply.AssertError(HttpStatusCode.BadRequest, message, field);
    }

    [Theory]
    [InlineData("{\"prompt\": \"x\"", "not valid JSON")]
    [InlineData("prompt=x", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object, not an array")]
    [InlineData("\"text\"", "must be a JSON object, not a string")]
    [InlineData("", "body is empty")]
    public async Task Malformed_bodies_are_400(string body, string message)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", body);
        reply.AssertError(HttpStatusCode.BadRequest, message);
    }

    [Fact]
    public async Task Too_long_prompts_and_too_large_bodies_are_refused()
    {
        Reply longPrompt = await server.PostAsync("/v1/images/generations", $$"""{"prompt":"{{new string('a', 4001)}}"}""");
        longPrompt.AssertError(HttpStatusCode.BadRequest, "the limit is 4000", "prompt");

        Reply huge = await server.PostAsync("/v1/images/generations", $$"""{"prompt":"x","user":"{{new string('u', 70_000)}}"}""");
        huge.AssertError(HttpStatusCode.RequestEntityTooLarge, "limit");
    }
}
