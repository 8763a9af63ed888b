namespace FluxNative;

/// <summary>
/// The tiny random models behind <c>flux generate --demo</c>: the whole pipeline, prompt text to image file, runs
/// on a machine with no download. The weights are random (the picture is structured noise, not a rendering of the
/// prompt); the shapes and tensor names are the published ones at reduced width and depth (the text encoders keep
/// the real vocabularies and are read through the real CLIP and T5 tokenizers, shipped beside the assembly in
/// <c>tokenizers/</c>), and the autoencoder has the published four levels, so sizes behave as with the real model.
/// </summary>
public static class DemoModels
{
    /// <summary>Text tokens of the demo's random prompt embeddings.</summary>
    public const int TextTokens = 16;

    /// <summary>The smallest side the demo serves (<c>flux serve --demo</c>'s default size policy: the tiny models are cheap at any size).</summary>
    public const int MinSide = FluxPipelineOptions.DefaultMinSide;

    /// <summary>The prompt the demo encodes when none is given.</summary>
    public const string DefaultPrompt = "a red fox in the snow, photograph";

    /// <summary>The demo's default longest side.</summary>
    public const int DefaultImageSize = 256;

    /// <summary>
    /// Writes the demo's transformer (tiny [dev], BFL layout) and autoencoder (width 32, 4 levels, 2 ResnetBlocks
    /// per level) into <paramref name="directory"/> unless they are there already, and returns where they are.
    /// </summary>
    public static FluxPipelineSources Write(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        string transformer = Path.Combine(directory, "flux-tiny-dev.safetensors");
        string autoencoder = Path.Combine(directory, "ae-tiny.safetensors");
        string clip = Path.Combine(directory, "text_encoder");
        string t5 = Path.Combine(directory, "text_encoder_2");
        WriteOnce(transformer, new TinyModelOptions { Kind = ModelKind.FluxTransformer, Variant = FluxVariant.Dev, Seed = 1 });
        WriteOnce(autoencoder, new TinyModelOptions { Kind = ModelKind.Autoencoder, Depth = 4, DepthSingle = 2, Seed = 1 });
        // Widths 32: the tiny transformer's context and pooled inputs.
        WriteOnce(clip, new TinyModelOptions { Kind = ModelKind.ClipText, Layout = CheckpointLayout.Diffusers, Seed = 1 });
        WriteOnce(t5, new TinyModelOptions { Kind = ModelKind.T5Encoder, Layout = CheckpointLayout.Diffusers, Seed = 1 });
        return new FluxPipelineSources
        {
            Transformer = transformer,
            Autoencoder = autoencoder,
            Clip = clip,
            T5 = t5,
            ClipTokenizer = Path.Combine(TokenizerDirectory, "clip"),
            T5Tokenizer = Path.Combine(TokenizerDirectory, "t5"),
        };
    }

    /// <summary>The real CLIP (<c>clip/</c>) and T5 (<c>t5/</c>) tokenizer files shipped with the library (<see cref="FluxTokenizerFiles.Directory"/>).</summary>
    public static string TokenizerDirectory => FluxTokenizerFiles.Directory;

    private static void WriteOnce(string path, TinyModelOptions options)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
        {
            TinyModel.Write(options, path);
        }
    }

    /// <summary>The pipeline options of the demo: the default size bounds; T5 reads 64 tokens.</summary>
    public static FluxPipelineOptions Options { get; } = new() { T5MaxLength = 64 };

    /// <summary>
    /// Random prompt embeddings for a model with <paramref name="config"/>, a function of <paramref name="seed"/> only
    /// (the tiny models have no text encoders of their own yet).
    /// </summary>
    public static PromptEmbeddings RandomEmbeddings(FluxTransformerConfig config, long seed, int tokens = TextTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        var txt = new float[tokens * config.ContextInDim];
        var pooled = new float[config.VecInDim];
        // Streams far from the image noise's (seed + k).
        LatentNoise.Fill(unchecked(seed ^ 0x5DEECE66DL), txt);
        LatentNoise.Fill(unchecked(seed ^ 0x2545F4914F6CDD1DL), pooled);
        return new PromptEmbeddings(txt, pooled, 1, tokens);
    }
}
