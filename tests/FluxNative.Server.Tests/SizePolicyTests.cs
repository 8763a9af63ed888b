using System.Net;
using System.Text.Json;
using FluxNative.Testing;

namespace FluxNative.Server.Tests;

/// <summary>
/// The server's size policy (<see cref="FluxServerOptions.MinImageSide"/>, <see cref="FluxServerOptions.MaxImageSide"/>,
/// <c>flux serve --min-side/--max-side</c>): FLUX's trained 256–2048 by default, wider on request, with the pipeline's
/// warnings (a size outside the trained range, a prompt cut short) in the prediction's logs.
/// </summary>
public sealed class SizePolicyTests : IDisposable
{
    private readonly TempDirectory models = new();

    public void Dispose() => models.Dispose();

    /// <summary>A server on the tiny models with text encoders, not in demo mode (whose default policy starts at 64).</summary>
    private Task<ServerHost> StartAsync(Func<FluxServerOptions, FluxServerOptions>? change = null)
    {
        FluxPipelineSources sources = DemoModels.Write(models.Path);
        return ServerHost.StartAsync(options =>
        {
            options = options with { Demo = false, Model = sources, Pipeline = DemoModels.Options };
            return change?.Invoke(options) ?? options;
        });
    }

    [Fact]
    public async Task By_default_sizes_outside_256_to_2048_are_400_naming_the_field()
    {
        await using ServerHost server = await StartAsync();

        (await server.PostAsync("/v1/images/generations", """{"prompt":"x","size":"128x256"}"""))
            .AssertError(HttpStatusCode.BadRequest, "The image width must be between 256 and 2048 pixels", "size");
        (await server.PostAsync("/v1/images/generations", """{"prompt":"x","size":"256x2560"}"""))
            .AssertError(HttpStatusCode.BadRequest, "The image height must be between 256 and 2048 pixels", "size");
        (await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", """{"input":{"prompt":"x","image_size":128}}"""))
            .AssertError(HttpStatusCode.UnprocessableEntity, "image_size must be between 256 and 2048 (got 128)", "input.image_size");
        Assert.Equal(0, server.Predictions.QueueLength);
    }

    [Fact]
    public async Task The_trained_range_runs_without_a_warning()
    {
        await using ServerHost server = await StartAsync();

        JsonElement prediction = await GenerateAsync(server, """{"prompt":"a red fox","size":"256x256","num_inference_steps":1}""");

        Assert.Equal("succeeded", prediction.GetProperty("status").GetString());
        Assert.DoesNotContain("Warning", prediction.GetProperty("logs").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_wider_policy_runs_small_sizes_with_a_warning_in_the_logs()
    {
        await using ServerHost server = await StartAsync(o => o with { MinImageSide = 64, MaxImageSide = 4096 });

        JsonElement prediction = await GenerateAsync(server, """{"prompt":"a red fox","size":"64x96","num_inference_steps":1}""");

        Assert.Equal("succeeded", prediction.GetProperty("status").GetString());
        Assert.Contains("Warning: 64x96 is outside FLUX's trained range (256-2048 pixels a side); expect poorer images.",
            prediction.GetProperty("logs").GetString(), StringComparison.Ordinal);
        (await server.PostAsync("/v1/images/generations", """{"prompt":"x","size":"48x64"}"""))
            .AssertError(HttpStatusCode.BadRequest, "between 64 and 4096", "size");
    }

    [Fact]
    public async Task A_prompt_cut_short_is_a_warning_in_the_logs()
    {
        await using ServerHost server = await StartAsync();
        string prompt = string.Join(' ', Enumerable.Repeat("cat", 80));   // one token a word for CLIP and T5

        JsonElement prediction = await GenerateAsync(server, $$"""{"prompt":"{{prompt}}","size":"256x256","num_inference_steps":1}""");

        string logs = prediction.GetProperty("logs").GetString()!;
        Assert.Contains("Warning: The prompt is 80 CLIP tokens but CLIP reads 77, 75 of them the prompt's: the last 5 are cut off.", logs, StringComparison.Ordinal);
        Assert.Contains("Warning: The prompt is 80 T5 tokens but T5 reads 64", logs, StringComparison.Ordinal);
    }

    [Fact]
    public void The_demo_s_default_policy_starts_at_64_and_the_default_is_256_to_2048()
    {
        var options = new FluxServerOptions();
        Assert.Equal((256, 2048), (options.EffectiveMinImageSide, options.MaxImageSide));
        Assert.Equal(64, (options with { Demo = true }).EffectiveMinImageSide);
        Assert.Equal(512, (options with { Demo = true, MinImageSide = 512 }).EffectiveMinImageSide);
    }

    [Theory]
    [InlineData(32, 2048, "The smallest image side must be between 64 and the largest (2048) (got 32).")]
    [InlineData(1024, 512, "The smallest image side must be between 64 and the largest (512) (got 1024).")]
    [InlineData(256, 20000, "The largest image side must be at most 16384 (got 20000).")]
    public void A_policy_out_of_bounds_refuses_to_start(int min, int max, string message)
    {
        using var directory = new TempDirectory();
        FluxServerOptions options = ServerHost.DefaultOptions(directory.Path) with { MinImageSide = min, MaxImageSide = max };

        var e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options));

        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void An_address_kestrel_cannot_parse_refuses_to_start()
    {
        using var directory = new TempDirectory();
        FluxServerOptions options = ServerHost.DefaultOptions(directory.Path) with { Urls = ["http://127.0.0.1:0", "notaurl"] };

        var e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options));

        Assert.Contains("'notaurl' is not an address to listen on", e.Message, StringComparison.Ordinal);
        Assert.Null(FluxServer.CheckUrl("http://*:8080"));
        Assert.Null(FluxServer.CheckUrl("https://localhost:0"));
    }

    private static async Task<JsonElement> GenerateAsync(ServerHost server, string body)
    {
        Reply reply = await server.PostAsync("/v1/images/generations", body);
        Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
        string id = reply.Json.GetProperty("id").GetString()!;
        return (await server.GetAsync($"/v1/predictions/{id}")).Json;
    }
}
