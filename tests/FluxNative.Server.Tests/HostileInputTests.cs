using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace FluxNative.Server.Tests;

/// <summary>
/// Input an attacker or a broken client sends: strings that are not text (a lone UTF-16 surrogate, bytes that are not
/// UTF-8), bodies that are not JSON. Each is a 4xx naming what is wrong, never a 5xx.
/// </summary>
public sealed class HostileInputTests : IAsyncLifetime
{
    private const string ModelPath = "/v1/models/black-forest-labs/flux-dev/predictions";

    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync();

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Theory]
    [InlineData(ModelPath, """{"input":{"prompt":"a\ud800"}}""", "input.prompt")]
    [InlineData(ModelPath, """{"input":{"prompt":"\udc00 fox"}}""", "input.prompt")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","aspect_ratio":"1:1\ud800"}}""", "input.aspect_ratio")]
    [InlineData(ModelPath, """{"input":{"prompt":"x"},"webhook_events_filter":["completed","\ud800"]}""", "webhook_events_filter[1]")]
    [InlineData(ModelPath, """{"input":{"prompt":"x","\ud800":1}}""", "input")]
    [InlineData("/v1/predictions", """{"version":"a\ud800","input":{"prompt":"x"}}""", "version")]
    [InlineData("/v1/images/generations", """{"prompt":"a\ud800"}""", "prompt")]
    [InlineData("/v1/images/generations", """{"prompt":"x","size":"\udfff"}""", "size")]
    [InlineData("/v1/images/generations", """{"prompt":"x","user":{"deep":["\ud800"]}}""", "user.deep[0]")]
    public async Task A_lone_surrogate_in_any_string_is_a_4xx_naming_the_field(string path, string body, string field)
    {
        Reply reply = await server.PostAsync(path, body);
        Assert.True((int)reply.Status is 400 or 422, $"{(int)reply.Status}: {reply.Text}");
        reply.AssertError(reply.Status, "not valid Unicode text", field);
    }

    [Theory]
    [InlineData(ModelPath, "{\"input\":{\"prompt\":\"a \xff fox\"}}", "input.prompt")]
    [InlineData(ModelPath, "{\"input\":{\"prompt\":\"\xc3\"}}", "input.prompt")]
    [InlineData(ModelPath, "{\"input\":{\"prompt\":\"x\",\"seed\":1,\"output_format\":\"\xed\xa0\x80\"}}", "input.output_format")]
    [InlineData("/v1/images/generations", "{\"prompt\":\"\xf8\x88\x80\x80\x80\"}", "prompt")]
    [InlineData("/v1/images/generations", "{\"prompt\":\"x\",\"\xfe\":1}", "")]
    public async Task Bytes_that_are_not_utf8_are_a_4xx_naming_the_field(string path, string latin1Body, string field)
    {
        // The body's bytes as written (each char one byte), so the invalid sequences reach the server as they are.
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(Encoding.Latin1.GetBytes(latin1Body)) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using HttpResponseMessage response = await server.Client.SendAsync(request);
        Reply reply = await Reply.ReadAsync(response);
        Assert.True((int)reply.Status is 400 or 422, $"{(int)reply.Status}: {reply.Text}");
        reply.AssertError(reply.Status, field.Length == 0 ? "not valid" : "not valid UTF-8", field.Length == 0 ? null : field);
    }

    [Theory]
    [InlineData("POST", ModelPath, "text/plain")]
    [InlineData("POST", ModelPath, "application/x-www-form-urlencoded")]
    [InlineData("POST", ModelPath, "multipart/form-data; boundary=x")]
    [InlineData("POST", "/v1/predictions", "text/plain; charset=utf-8")]
    [InlineData("POST", "/v1/images/generations", "text/plain")]
    [InlineData("POST", "/v1/images/generations", "application/json; charset=utf-16")]
    [InlineData("POST", "/v1/images/generations", "application/jsonx")]
    [InlineData("POST", "/v1/images/generations", null)]
    [InlineData("POST", "/v1/predictions/abc/cancel", "text/plain")]
    public async Task A_body_that_is_not_json_is_415(string method, string path, string? contentType)
    {
        // What a web page may send without a CORS preflight: text/plain, a form, or no type at all.
        using var request = new HttpRequestMessage(new HttpMethod(method), path) { Content = new ByteArrayContent("""{"input":{"prompt":"x"}}"""u8.ToArray()) };
        if (contentType is not null)
        {
            request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        }

        using HttpResponseMessage response = await server.Client.SendAsync(request);
        Reply reply = await Reply.ReadAsync(response);
        reply.AssertError(HttpStatusCode.UnsupportedMediaType, "Content-Type: application/json");
        Assert.Equal(0, server.Predictions.QueueLength);
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("Application/JSON; charset=\"UTF-8\"")]
    [InlineData("application/vnd.api+json")]
    public async Task Json_content_types_are_accepted(string contentType)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/images/generations")
        {
            Content = new ByteArrayContent("""{"prompt":"x","size":"64x64","num_inference_steps":1,"response_format":"b64_json"}"""u8.ToArray()),
        };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        using HttpResponseMessage response = await server.Client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task Cancel_without_a_body_needs_no_content_type()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/predictions/nosuchid/cancel");
        using HttpResponseMessage response = await server.Client.SendAsync(request);
        (await Reply.ReadAsync(response)).AssertError(HttpStatusCode.NotFound, "No prediction");
    }
}
