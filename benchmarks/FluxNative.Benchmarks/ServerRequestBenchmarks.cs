using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using FluxNative.Server;

namespace FluxNative.Benchmarks;

/// <summary>
/// What the server does with a request body before it queues the prediction: parse the JSON and validate every field
/// into a <c>GenerationSpec</c>, for OpenAI's <c>POST /v1/images/generations</c> and Replicate's prediction input,
/// and for a Replicate image-to-image input carrying a 512×512 PNG as a data: URI (base64 and PNG decoding dominate).
/// Run with: dotnet run -c Release --project benchmarks/FluxNative.Benchmarks -- --filter '*ServerRequest*' --job short
/// </summary>
[MemoryDiagnoser]
public class ServerRequestBenchmarks
{
    private readonly FluxServerOptions options = new();
    private byte[] openAi = [];
    private byte[] replicate = [];
    private byte[] replicateImage = [];

    [GlobalSetup]
    public void Setup()
    {
        openAi = Encoding.UTF8.GetBytes("""
            {"model":"flux-dev","prompt":"a cyberpunk samurai with glowing katana, rain, reflections, 8k","size":"1024x768",
             "n":2,"response_format":"b64_json","quality":"standard","num_inference_steps":28,"guidance_scale":3.5,"seed":42}
            """);
        replicate = Encoding.UTF8.GetBytes("""
            {"prompt":"a cyberpunk samurai with glowing katana, rain, reflections, 8k","aspect_ratio":"16:9","num_outputs":2,
             "num_inference_steps":28,"guidance":3.5,"seed":42,"output_format":"webp","output_quality":90}
            """);
        var rgb = new byte[512 * 512 * 3];
        new Random(1).NextBytes(rgb);
        string png = Convert.ToBase64String(Images.Encode(rgb, 512, 512, ImageFormat.Png));
        replicateImage = Encoding.UTF8.GetBytes(
            $$"""{"prompt":"the same scene at night","image":"data:image/png;base64,{{png}}","prompt_strength":0.7,"num_inference_steps":28}""");
    }

    /// <summary>OpenAI images/generations: JSON parse + validation.</summary>
    [Benchmark(Baseline = true)]
    public object OpenAiGenerations()
    {
        using JsonDocument body = JsonDocument.Parse(openAi);
        return InputParsing.ParseOpenAi(body.RootElement, options);
    }

    /// <summary>Replicate prediction input: JSON parse + validation.</summary>
    [Benchmark]
    public object ReplicateInput()
    {
        using JsonDocument body = JsonDocument.Parse(replicate);
        return InputParsing.ParseReplicateInput(new JsonFields(body.RootElement), options);
    }

    /// <summary>Replicate image-to-image input with a 512×512 PNG data: URI.</summary>
    [Benchmark]
    public object ReplicateImageInput()
    {
        using JsonDocument body = JsonDocument.Parse(replicateImage);
        return InputParsing.ParseReplicateInput(new JsonFields(body.RootElement), options);
    }
}
