using System.Net;
using System.Text.Json;

namespace FluxNative.Server.Tests;

/// <summary>
/// OpenAI's images API exactly: <c>GET /v1/models</c>; <c>quality</c>, <c>style</c>, <c>background</c>, <c>moderation</c>
/// values honoured, refused with a reason (422) or unknown (400); <c>stream</c> refused; parameters this server does
/// not implement refused (422), never dropped; a model that is not served is a 404.
/// </summary>
public sealed class OpenAiContractTests : IAsyncLifetime
{
    private const string Quick = "\"prompt\":\"a kite\",\"size\":\"64x64\",\"num_inference_steps\":1,\"response_format\":\"b64_json\"";

    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Fact]
    public async Task Models_lists_the_served_model_for_both_apis()
    {
        Reply reply = await server.GetAsync("/v1/models");
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        JsonElement list = reply.Json;
        Assert.Equal("list", list.GetProperty("object").GetString());
        JsonElement model = Assert.Single(list.GetProperty("data").EnumerateArray());
        Assert.Equal("flux-dev", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal("black-forest-labs", model.GetProperty("owned_by").GetString());
        Assert.Equal("flux-dev", Assert.Single(list.GetProperty("results").EnumerateArray()).GetProperty("name").GetString());

        Assert.Equal("flux-dev", (await server.GetAsync("/v1/models/flux-dev")).Json.GetProperty("id").GetString());
        (await server.GetAsync("/v1/models/dall-e-3")).AssertError(HttpStatusCode.NotFound, "does not exist on this server; it serves flux-dev");
    }

    [Theory]
    [InlineData("\"quality\":\"auto\"")]
    [InlineData("\"quality\":\"standard\"")]
    [InlineData("\"background\":\"opaque\"")]
    [InlineData("\"background\":\"auto\"")]
    [InlineData("\"moderation\":\"low\"")]
    [InlineData("\"stream\":false")]
    [InlineData("\"partial_images\":0")]
    [InlineData("\"user\":\"user-1234\"")]
    [InlineData("\"model\":\"flux-dev\"")]
    [InlineData("\"model\":\"black-forest-labs/flux-dev\"")]
    [InlineData("\"style\":null")]
    public async Task Known_values_this_server_does_are_honoured(string field)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick},{field}}}");
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        Assert.Single(reply.Json.GetProperty("data").EnumerateArray());
    }

    [Theory]
    [InlineData("quality", "\"hd\"", "num_inference_steps")]
    [InlineData("quality", "\"high\"", "num_inference_steps")]
    [InlineData("quality", "\"low\"", "num_inference_steps")]
    [InlineData("style", "\"vivid\"", "describe the style in the prompt")]
    [InlineData("style", "\"natural\"", "describe the style in the prompt")]
    [InlineData("background", "\"transparent\"", "no alpha channel")]
    [InlineData("moderation", "\"auto\"", "no content moderation")]
    [InlineData("stream", "true", "streaming partial images is not implemented")]
    [InlineData("partial_images", "2", "need streaming")]
    [InlineData("image", "\"https://example.com/a.png\"", "image-to-image")]
    [InlineData("mask", "\"https://example.com/m.png\"", "inpainting")]
    [InlineData("lora_weights", "\"x/y\"", "LoRA")]
    [InlineData("negative_prompt", "\"blurry\"", "no negative prompt")]
    public async Task Known_values_this_server_does_not_do_are_422_with_the_reason(string field, string value, string reason)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick},\"{field}\":{value}}}");
        reply.AssertError(HttpStatusCode.UnprocessableEntity, reason, field);
        Assert.Equal("unsupported", reply.Json.GetProperty("invalid_fields")[0].GetProperty("type").GetString());
    }

    [Theory]
    [InlineData("quality", "\"ultra\"", "quality must be one of 'auto', 'standard', 'hd'")]
    [InlineData("style", "\"cartoon\"", "style must be one of 'vivid', 'natural'")]
    [InlineData("background", "\"glass\"", "background must be one of 'auto', 'opaque', 'transparent'")]
    [InlineData("moderation", "\"none\"", "moderation must be one of")]
    [InlineData("quality", "1", "quality must be a string")]
    [InlineData("stream", "\"yes\"", "stream must be true or false")]
    [InlineData("partial_images", "9", "partial_images must be between 0 and 3")]
    [InlineData("user", "{\"id\":1}", "user must be a string")]
    public async Task Unknown_values_are_400(string field, string value, string message)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick},\"{field}\":{value}}}");
        reply.AssertError(HttpStatusCode.BadRequest, message, field);
    }

    [Fact]
    public async Task Unknown_parameters_are_422_naming_them()
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick},\"sise\":\"64x64\",\"temperature\":1}}");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, reply.Status);
        Assert.Equal(["sise", "temperature"], reply.Json.GetProperty("invalid_fields").EnumerateArray().Select(f => f.GetProperty("field").GetString()));
        Assert.Contains("sise is not a parameter of POST /v1/images/generations", reply.Json.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("dall-e-3")]
    [InlineData("flux-schnell")]
    [InlineData("black-forest-labs/flux-schnell")]
    [InlineData("flux")]
    public async Task A_model_that_is_not_served_is_404(string model)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick},\"model\":\"{model}\"}}");
        reply.AssertError(HttpStatusCode.NotFound, $"The model '{model}' does not exist on this server; it serves flux-dev", "model");
    }

    [Fact]
    public async Task The_model_is_recorded_as_served()
    {
        Reply reply = await server.PostAsync("/v1/images/generations", $"{{{Quick}}}");
        string id = reply.Json.GetProperty("id").GetString()!;
        Assert.Equal("black-forest-labs/flux-dev", (await server.GetAsync($"/v1/predictions/{id}")).Json.GetProperty("model").GetString());
    }
}
