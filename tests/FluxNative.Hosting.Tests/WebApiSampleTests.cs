using System.Net;
using System.Net.Http.Json;
using FluxNative.Testing;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;

namespace FluxNative.Hosting.Tests;

/// <summary>The ASP.NET Core sample (samples/FluxNative.Samples.WebApi) in process: POST a prompt, get a PNG.</summary>
public sealed class WebApiSampleTests : IDisposable
{
    private readonly TempDirectory demo = new();
    private readonly WebApplicationFactory<Program> factory;

    public WebApiSampleTests()
    {
        factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("FluxPipeline:Demo", "true")
            .UseSetting("FluxPipeline:DemoDirectory", demo.Path));
    }

    [Fact]
    public async Task Posting_a_prompt_answers_a_png_of_the_size_asked()
    {
        using HttpClient client = factory.CreateClient();

        using HttpResponseMessage response = await client.PostAsJsonAsync("/generate", new { prompt = "a red fox in the snow", seed = 42, width = 96, height = 64, steps = 2 });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/png", response.Content.Headers.ContentType?.MediaType);
        byte[] png = await response.Content.ReadAsByteArrayAsync();
        RgbImage image = Images.Decode(png, out ImageFormat format);
        Assert.Equal((ImageFormat.Png, 96, 64), (format, image.Width, image.Height));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/ready")).StatusCode);
    }

    [Fact]
    public async Task A_bad_request_is_a_400_naming_the_field()
    {
        using HttpClient client = factory.CreateClient();

        using HttpResponseMessage response = await client.PostAsJsonAsync("/generate", new { prompt = "a fox", steps = 99 });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("\"steps\"", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    public void Dispose()
    {
        factory.Dispose();
        demo.Dispose();
    }
}
