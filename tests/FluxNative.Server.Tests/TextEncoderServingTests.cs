using System.Net;
using System.Text.Json;
using FluxNative.Testing;

namespace FluxNative.Server.Tests;

/// <summary>A model with text encoders (the tiny ones, with the real tokenizers): prompts are encoded by the pipeline.</summary>
public sealed class TextEncoderServingTests : IAsyncLifetime
{
    private readonly TempDirectory models = new();
    private ServerHost server = null!;

    public async Task InitializeAsync()
    {
        FluxPipelineSources sources = DemoModels.Write(models.Path);   // transformer, autoencoder, CLIP, T5, tokenizers
        server = await ServerHost.StartAsync(options => options with
        {
            Demo = false,
            Model = sources,
            Pipeline = DemoModels.Options,
            MinImageSide = 64,   // the tiny models are cheap at any size
        });
    }

    public async Task DisposeAsync()
    {
        await server.DisposeAsync();
        models.Dispose();
    }

    [Fact]
    public async Task A_prompt_is_encoded_and_changes_the_image()
    {
        async Task<string> Generate(string prompt)
        {
            Reply reply = await server.PostAsync("/v1/images/generations",
                $$"""{"prompt":"{{prompt}}","size":"64x64","num_inference_steps":2,"seed":5,"response_format":"b64_json"}""");
            Assert.True(reply.Status == HttpStatusCode.OK, reply.Text);
            return reply.Json.GetProperty("data")[0].GetProperty("b64_json").GetString()!;
        }

        string fox = await Generate("a red fox");
        Assert.Equal(fox, await Generate("a red fox"));
        Assert.NotEqual(fox, await Generate("a blue whale"));

        PromptEncoder encoder = server.App.Services.GetService(typeof(ModelHost)) is ModelHost host ? host.Pipeline.PromptEncoder! : null!;
        Assert.NotNull(encoder);
        Assert.True(encoder.CacheHits >= 1, "the repeated prompt was encoded again");
    }

    [Fact]
    public async Task Prompts_that_arrive_while_one_runs_join_its_batch_and_get_the_images_they_would_get_alone()
    {
        const string Long = """{"prompt":"a slow heron","image_size":256,"num_inference_steps":50,"seed":1,"output_format":"png"}""";
        const string Joiner = """{"prompt":"a quick wren","image_size":256,"num_inference_steps":3,"seed":2,"output_format":"png"}""";
        string first = await server.CreateAsync(Long);
        await server.WaitStepAsync(first);
        string second = await server.CreateAsync(Joiner);   // encoded beside the running steps, then joins them

        JsonElement p1 = await server.WaitFinishedAsync(first), p2 = await server.WaitFinishedAsync(second);
        Assert.Equal("succeeded", p1.GetProperty("status").GetString());
        Assert.Equal("succeeded", p2.GetProperty("status").GetString());
        Assert.Equal(2, p1.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.Equal(2, p2.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        Assert.True(DateTimeOffset.Parse(p2.GetProperty("completed_at").GetString()!) < DateTimeOffset.Parse(p1.GetProperty("completed_at").GetString()!),
            "the short one left the batch when its steps were done");

        Reply alone = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{Joiner}}}""", ("Prefer", "wait"));
        Assert.Equal(1, alone.Json.GetProperty("metrics").GetProperty("batch_size").GetInt32());
        byte[] single = await Pixels(alone.Json.GetProperty("output")[0].GetString()!);
        byte[] batched = await Pixels(p2.GetProperty("output")[0].GetString()!);
        Assert.Equal(single.Length, batched.Length);
        int worst = single.Zip(batched, (x, y) => Math.Abs(x - y)).Max();
        Assert.True(worst <= 2, $"batched vs alone differ by {worst} levels");
    }

    private async Task<byte[]> Pixels(string url) => Images.Decode(await server.Client.GetByteArrayAsync(url), out _).Rgb;
}
