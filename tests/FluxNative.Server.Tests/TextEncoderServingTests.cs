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
}
