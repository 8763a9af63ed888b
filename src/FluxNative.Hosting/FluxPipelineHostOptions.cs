using System.Globalization;

namespace FluxNative.Hosting;

/// <summary>
/// The pipeline a host loads, as configuration gives it (the <c>FluxPipeline</c> section of appsettings.json by
/// convention). Plain settable properties of strings, numbers and enums, so that configuration binding, environment
/// variables (<c>FluxPipeline__Device=cuda:0</c>) and code all fill it the same way.
/// </summary>
/// <example><code>
/// "FluxPipeline": {
///   "ModelDirectory": "/models/FLUX.1-dev",
///   "Device": "cuda:0",
///   "TransformerWeights": "Fp8",
///   "Loras": [ "/loras/style.safetensors:0.8" ]
/// }
/// </code></example>
public sealed class FluxPipelineHostOptions
{
    /// <summary>The configuration section <see cref="Microsoft.Extensions.DependencyInjection.FluxPipelineServiceCollectionExtensions.AddFluxPipeline(Microsoft.Extensions.DependencyInjection.IServiceCollection, Microsoft.Extensions.Configuration.IConfiguration, Action{FluxPipelineHostOptions}?)"/> is usually given.</summary>
    public const string SectionName = "FluxPipeline";

    /// <summary>Load the tiny random demo models (written to <see cref="DemoDirectory"/>) instead of a real model: the whole pipeline runs in seconds on any machine; the picture is structured noise.</summary>
    public bool Demo { get; set; }

    /// <summary>Where <see cref="Demo"/> writes its models (default: a <c>fluxnative-demo-hosting</c> folder under the temp folder).</summary>
    public string? DemoDirectory { get; set; }

    /// <summary>A diffusers model folder; see <see cref="FluxPipelineSources.ModelDirectory"/>.</summary>
    public string? ModelDirectory { get; set; }

    /// <summary>The transformer file or folder; see <see cref="FluxPipelineSources.Transformer"/>.</summary>
    public string? Transformer { get; set; }

    /// <summary>The autoencoder file or folder; see <see cref="FluxPipelineSources.Autoencoder"/>.</summary>
    public string? Autoencoder { get; set; }

    /// <summary>The CLIP text encoder folder; see <see cref="FluxPipelineSources.Clip"/>.</summary>
    public string? Clip { get; set; }

    /// <summary>The T5 encoder folder; see <see cref="FluxPipelineSources.T5"/>.</summary>
    public string? T5 { get; set; }

    /// <summary>The CLIP tokenizer folder; see <see cref="FluxPipelineSources.ClipTokenizer"/>.</summary>
    public string? ClipTokenizer { get; set; }

    /// <summary>The T5 tokenizer folder; see <see cref="FluxPipelineSources.T5Tokenizer"/>.</summary>
    public string? T5Tokenizer { get; set; }

    /// <summary><c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>How the transformer holds its linear weights; see <see cref="FluxPipelineOptions.TransformerWeights"/>.</summary>
    public FluxWeightFormat TransformerWeights { get; set; } = FluxWeightFormat.AsStored;

    /// <summary>How the T5 encoder holds its linear weights; see <see cref="FluxPipelineOptions.T5Weights"/>.</summary>
    public FluxWeightFormat T5Weights { get; set; } = FluxWeightFormat.AsStored;

    /// <summary>Activation precision of the transformer's linear layers; see <see cref="FluxPipelineOptions.Activations"/>.</summary>
    public FluxActivationPrecision Activations { get; set; } = FluxActivationPrecision.F32;

    /// <summary>Native threads; 0 for the process-wide pool.</summary>
    public int Threads { get; set; }

    /// <summary>T5 tokens per prompt; 0 for the variant's.</summary>
    public int T5MaxLength { get; set; }

    /// <summary>Prompts whose embeddings are kept; 0 disables the cache.</summary>
    public int PromptCacheSize { get; set; } = 64;

    /// <summary>The most images that share one transformer forward.</summary>
    public int MaxBatchImages { get; set; } = FluxPipeline.MaxImages;

    /// <summary>The smallest side accepted, in pixels.</summary>
    public int MinSide { get; set; } = FluxPipelineOptions.DefaultMinSide;

    /// <summary>The largest side accepted, in pixels.</summary>
    public int MaxSide { get; set; } = FluxPipelineOptions.DefaultMaxSide;

    /// <summary>LoRA files merged at load, each <c>PATH</c> or <c>PATH:STRENGTH</c> (as <c>flux --lora</c>).</summary>
    public List<string> Loras { get; } = [];

    /// <summary>
    /// Hold the host's start-up until the pipeline is loaded (default false: the host starts at once and the load
    /// runs beside it; <see cref="FluxPipelineService.GetPipelineAsync"/> waits for it, and readiness checks can ask
    /// <see cref="FluxPipelineService.IsReady"/>).
    /// </summary>
    public bool WaitForLoadOnStart { get; set; }

    /// <summary>Where the parts are loaded from (the demo models are written first when <see cref="Demo"/>).</summary>
    public FluxPipelineSources ToSources()
    {
        if (Demo)
        {
            return DemoModels.Write(DemoDirectory ?? Path.Combine(Path.GetTempPath(), "fluxnative-demo-hosting"));
        }

        return new FluxPipelineSources
        {
            ModelDirectory = ModelDirectory,
            Transformer = Transformer,
            Autoencoder = Autoencoder,
            Clip = Clip,
            T5 = T5,
            ClipTokenizer = ClipTokenizer,
            T5Tokenizer = T5Tokenizer,
        };
    }

    /// <summary>The pipeline options these settings make (the demo's T5 length when <see cref="Demo"/> and none is given).</summary>
    /// <exception cref="GenerationRequestException">The device or a LoRA is not understood (the field names it).</exception>
    public FluxPipelineOptions ToPipelineOptions()
    {
        if (!FluxDevice.TryParse(Device, out FluxDevice device))
        {
            throw new GenerationRequestException("device", $"Device must be cpu, cuda or cuda:N (got '{Device}').");
        }

        var loras = new List<FluxLora>();
        foreach (string lora in Loras)
        {
            try
            {
                loras.Add(FluxLora.Parse(lora));
            }
            catch (FormatException e)
            {
                throw new GenerationRequestException("loras", string.Create(CultureInfo.InvariantCulture, $"LoRA '{lora}': {e.Message}"));
            }
        }

        return new FluxPipelineOptions
        {
            Device = device,
            TransformerWeights = TransformerWeights,
            T5Weights = T5Weights,
            Activations = Activations,
            Threads = Threads,
            T5MaxLength = T5MaxLength > 0 ? T5MaxLength : Demo ? DemoModels.Options.T5MaxLength : 0,
            PromptCacheSize = PromptCacheSize,
            MaxBatchImages = MaxBatchImages,
            MinSide = MinSide,
            MaxSide = MaxSide,
            Loras = loras,
        };
    }
}
