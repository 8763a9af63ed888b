using System.Globalization;
using System.Text;

namespace FluxNative;

/// <summary>
/// The generation parameters an image file carries, as the text AUTOMATIC1111 writes in its <c>parameters</c> chunk
/// (and stable-diffusion.cpp, Forge and the tools that read them: ComfyUI, Civitai, exiftool): the prompt, then one
/// line of <c>Key: value</c> pairs.
/// <code>
/// a red fox in the snow
/// Steps: 28, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3.5, Guidance: 3.5, Seed: 42, Size: 1024x1024, Model: flux1-dev, Version: FluxNative 0.9.0
/// </code>
/// </summary>
/// <remarks>
/// <para>The keys are the ones those readers parse: <c>Steps</c>, <c>Sampler</c> (FLUX's flow-matching Euler),
/// <c>CFG scale</c> (1: FLUX.1 runs no classifier-free guidance), <c>Distilled CFG Scale</c> (Forge's name for FLUX's
/// guidance, which its PNG-info tab restores and Civitai reads as guidance) and <c>Guidance</c> (stable-diffusion.cpp's
/// name for the same value; both [dev] only: [schnell] has no guidance), <c>Seed</c> (the seed of this image, seed + k
/// for image k; left out when the request gave its own latents), <c>Size</c> (width x height), <c>Model</c> and
/// <c>Version</c>.</para>
/// <para><c>Model</c> is <c>flux1-dev</c> or <c>flux1-schnell</c> for a transformer of the published size, else the
/// variant with its size, e.g. <c>flux1-dev (hidden 64 depth 2+3)</c>. Values hold no comma, so no reader has to
/// unquote them.</para>
/// <para>The prompt is user data and is made safe for every file: line ends become <c>\n</c>, a NUL character (which
/// no text chunk can hold) becomes U+FFFD, and a prompt too long for <see cref="Images.MaxParametersBytes"/> is cut
/// at a character boundary and ends in "…" (a prompt the pipeline accepts, at most
/// <see cref="FluxPipeline.MaxPromptLength"/> characters, always fits whole). A prompt given as embeddings is written
/// as <c>(prompt embeddings)</c>.</para>
/// </remarks>
public static class GenerationParameters
{
    /// <summary>The prompt line of an image generated from prompt embeddings (there is no text to write).</summary>
    public const string EmbeddingsPrompt = "(prompt embeddings)";

    private static readonly string LibraryVersion = typeof(GenerationParameters).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>The text for image <paramref name="index"/> of <paramref name="request"/> as planned.</summary>
    /// <param name="request">The request (its prompt, or its prompt embeddings; whether it gave its own latents).</param>
    /// <param name="plan">The request's plan: steps, guidance, seed and size with every default filled in.</param>
    /// <param name="model">The transformer's configuration (its variant and size name the model).</param>
    /// <param name="index">Which image of the batch, 0-based (image k has seed + k).</param>
    public static string Format(GenerationRequest request, GenerationPlan plan, FluxTransformerConfig model, int index)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, plan.NumImages);

        var line = new StringBuilder();
        Add(line, "Steps", plan.Steps.ToString(CultureInfo.InvariantCulture));
        Add(line, "Sampler", "Euler");
        Add(line, "CFG scale", "1");
        if (model.GuidanceEmbed)
        {
            string guidance = plan.Guidance.ToString(CultureInfo.InvariantCulture);
            Add(line, "Distilled CFG Scale", guidance);
            Add(line, "Guidance", guidance);
        }

        if (request.InitialLatents is null)
        {
            Add(line, "Seed", (plan.Seed + index).ToString(CultureInfo.InvariantCulture));
        }

        Add(line, "Size", FormattableString.Invariant($"{plan.Width}x{plan.Height}"));
        if (plan.Strength is double strength)
        {
            // A1111's key for an image-to-image run (the input image itself is not stored).
            Add(line, "Denoising strength", strength.ToString(CultureInfo.InvariantCulture));
        }

        Add(line, "Model", ModelName(model));
        Add(line, "Version", "FluxNative " + LibraryVersion);

        string prompt = request.PromptEmbeddings is not null ? EmbeddingsPrompt : Clean(request.Prompt ?? string.Empty);
        string parameters = line.ToString();
        int room = Images.MaxParametersBytes - Encoding.UTF8.GetByteCount(parameters) - 1;   // 1: the line break
        return Fit(prompt, room) + "\n" + parameters;
    }

    /// <summary>
    /// <c>flux1-dev</c> / <c>flux1-schnell</c> for the published transformer (hidden 3072, 19 double and 38 single
    /// blocks); otherwise the variant and its size, e.g. <c>flux1-dev (hidden 64 depth 2+3)</c>.
    /// </summary>
    public static string ModelName(FluxTransformerConfig model)
    {
        ArgumentNullException.ThrowIfNull(model);
        string variant = model.GuidanceEmbed ? "flux1-dev" : "flux1-schnell";
        bool published = model.HiddenSize == 3072 && model.Depth == 19 && model.DepthSingle == 38;
        return published ? variant : FormattableString.Invariant($"{variant} (hidden {model.HiddenSize} depth {model.Depth}+{model.DepthSingle})");
    }

    /// <summary>What the pipeline writes into image <paramref name="index"/>'s file: null when the request turned it off.</summary>
    internal static string? For(FluxPipeline pipeline, GenerationRequest request, GenerationPlan plan, int index) =>
        request.WriteMetadata ? Format(request, plan, pipeline.Transformer.Config, index) : null;

    private static void Add(StringBuilder line, string key, string value)
    {
        if (line.Length > 0)
        {
            line.Append(", ");
        }

        line.Append(key).Append(": ").Append(value);
    }

    // Line ends as A1111 splits them (\n); NUL, which ends a C string and which PNG text cannot hold, as U+FFFD.
    private static string Clean(string prompt) =>
        prompt.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n').Replace('\0', '\uFFFD');

    // The prompt, or as many of its leading characters as fit `room` UTF-8 bytes with an ellipsis after them.
    // Whole runes only: a surrogate pair is never split (Encoding.UTF8 would turn half of one into U+FFFD).
    private static string Fit(string prompt, int room)
    {
        if (Encoding.UTF8.GetByteCount(prompt) <= room)
        {
            return prompt;
        }

        const string Ellipsis = "…";
        int budget = room - Encoding.UTF8.GetByteCount(Ellipsis), used = 0, length = 0;
        foreach (Rune rune in prompt.EnumerateRunes())
        {
            if (used + rune.Utf8SequenceLength > budget)
            {
                break;
            }

            used += rune.Utf8SequenceLength;
            length += rune.Utf16SequenceLength;
        }

        return prompt[..length] + Ellipsis;
    }
}
