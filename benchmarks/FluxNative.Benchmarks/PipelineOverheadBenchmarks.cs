using BenchmarkDotNet.Attributes;

namespace FluxNative.Benchmarks;

/// <summary>
/// The managed parts of a generation that run on every request and every step, measured on a micro model (a
/// transformer 12 wide with one block of each kind, a 64×64 image, given prompt embeddings) whose transformer
/// forward costs microseconds, so a step's time is mostly the pipeline's own: the scheduler's hand-off to its
/// denoising thread, the per-step batch assembly, the P/Invoke and the Euler update. Every request also pays for
/// the tiny autoencoder's decode (four levels, 32 wide: tens of milliseconds on a small machine) and a PNG encode.
/// <list type="bullet">
/// <item><see cref="Plan"/>: validating and planning one request (what the server does before queueing it).</item>
/// <item><see cref="Generate"/> with <see cref="Steps"/> 1 and 9: (time at 9 − time at 1) / 8 is the cost of one
/// step; <see cref="Concurrent"/> 4 shows what several requests sharing each step cost beside one.</item>
/// </list>
/// Run with: dotnet run -c Release --project benchmarks/FluxNative.Benchmarks -- --filter '*PipelineOverhead*' --job short
/// </summary>
[MemoryDiagnoser]
public class PipelineOverheadBenchmarks
{
    private string folder = string.Empty;
    private FluxPipeline pipeline = null!;
    private GenerationRequest request = null!;

    [Params(1, 9)]
    public int Steps { get; set; }

    [Params(1, 4)]
    public int Concurrent { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        folder = Path.Combine(Path.GetTempPath(), $"fluxnative-bench-micro-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        string transformer = Path.Combine(folder, "flux.safetensors"), autoencoder = Path.Combine(folder, "ae.safetensors");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.FluxTransformer, HiddenSize = 12, NumHeads = 2, Depth = 1, DepthSingle = 1, Seed = 1 }, transformer);
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder, Depth = 4, DepthSingle = 1, Seed = 1 }, autoencoder);
        pipeline = FluxPipeline.Load(new FluxPipelineSources { Transformer = transformer, Autoencoder = autoencoder }, new FluxPipelineOptions { MinSide = 64 });
        request = new GenerationRequest
        {
            PromptEmbeddings = DemoModels.RandomEmbeddings(pipeline.Transformer.Config, seed: 1, tokens: 8),
            Width = 64,
            Height = 64,
            Steps = Steps,
            Seed = 1,
            WriteMetadata = false,
        };
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        pipeline.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    /// <summary>Validating and planning a request: size, steps, guidance, warnings.</summary>
    [Benchmark]
    public GenerationPlan Plan() => pipeline.Plan(request);

    /// <summary><see cref="Concurrent"/> requests of <see cref="Steps"/> steps each, started together (they share each step).</summary>
    [Benchmark]
    public async Task<int> Generate()
    {
        var running = new Task<GenerationResult>[Concurrent];
        for (int i = 0; i < running.Length; i++)
        {
            running[i] = pipeline.GenerateAsync(request with { Seed = i });
        }

        int bytes = 0;
        foreach (GenerationResult result in await Task.WhenAll(running).ConfigureAwait(false))
        {
            bytes += result.Images[0].Bytes.Length;
        }

        return bytes;
    }
}
