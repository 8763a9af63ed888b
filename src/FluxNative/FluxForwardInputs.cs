namespace FluxNative;

/// <summary>
/// The inputs of one FLUX transformer forward pass: a batch of <see cref="Batch"/> samples, each with
/// <see cref="ImageTokens"/> packed latent tokens and <see cref="TextTokens"/> T5 tokens. Every tensor
/// is float32, row-major, and is read (not copied) during <see cref="FluxTransformer.Forward(FluxForwardInputs)"/>.
/// </summary>
/// <remarks>
/// Shapes, with <c>B</c> = <see cref="Batch"/>, <c>Limg</c> = <see cref="ImageTokens"/> and <c>Ltxt</c> = <see cref="TextTokens"/>:
/// <list type="table">
/// <item><term><see cref="Img"/></term><description>[B, Limg, in_channels]</description></item>
/// <item><term><see cref="ImgIds"/></term><description>[B, Limg, 3]</description></item>
/// <item><term><see cref="Txt"/></term><description>[B, Ltxt, context_in_dim]</description></item>
/// <item><term><see cref="TxtIds"/></term><description>[B, Ltxt, 3]</description></item>
/// <item><term><see cref="Y"/></term><description>[B, vec_in_dim]</description></item>
/// <item><term><see cref="Timesteps"/></term><description>[B], t in [0, 1] (the model multiplies by 1000)</description></item>
/// <item><term><see cref="Guidance"/></term><description>[B]; required by dev models, ignored by schnell</description></item>
/// </list>
/// </remarks>
public sealed record FluxForwardInputs
{
    /// <summary>Samples in the batch (B).</summary>
    public required int Batch { get; init; }

    /// <summary>Image tokens per sample (Limg): packed 2x2 latent patches.</summary>
    public required int ImageTokens { get; init; }

    /// <summary>Text tokens per sample (Ltxt).</summary>
    public required int TextTokens { get; init; }

    /// <summary>Packed latents, [B, Limg, in_channels].</summary>
    public required ReadOnlyMemory<float> Img { get; init; }

    /// <summary>Image position ids, [B, Limg, 3].</summary>
    public required ReadOnlyMemory<float> ImgIds { get; init; }

    /// <summary>T5 token embeddings, [B, Ltxt, context_in_dim].</summary>
    public required ReadOnlyMemory<float> Txt { get; init; }

    /// <summary>Text position ids, [B, Ltxt, 3] (zeros for FLUX.1).</summary>
    public required ReadOnlyMemory<float> TxtIds { get; init; }

    /// <summary>The pooled CLIP vector, [B, vec_in_dim].</summary>
    public required ReadOnlyMemory<float> Y { get; init; }

    /// <summary>Timesteps, [B], in [0, 1].</summary>
    public required ReadOnlyMemory<float> Timesteps { get; init; }

    /// <summary>
    /// Guidance scales, [B]; may be left empty when the model has no guidance embedder (schnell), which
    /// ignores it. When given, it must still be [B].
    /// </summary>
    /// <remarks>
    /// Empty rather than nullable: a null <c>float[]</c> converts to an empty memory anyway, so "empty"
    /// is the one way to say "none" (and [B] is never empty).
    /// </remarks>
    public ReadOnlyMemory<float> Guidance { get; init; }

    /// <summary>
    /// Optional step caches, one per sample ([B]; a null entry runs every block): sample b's cache, given to every
    /// forward of its run in step order (<see cref="FluxStepCache"/>). The same cache twice in one batch is refused.
    /// </summary>
    public IReadOnlyList<FluxStepCache?>? StepCaches { get; init; }

    /// <summary>Optional, [B]: the forward writes how many transformer blocks each sample ran into it.</summary>
    public Memory<int> BlocksComputed { get; init; }

    /// <summary>The number of output values, [B, Limg, out_channels], for a model with <paramref name="config"/>.</summary>
    public long OutputLength(FluxTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return (long)Batch * ImageTokens * config.OutChannels;
    }

    /// <summary>
    /// Checks every count and length against <paramref name="config"/>, so that a wrong shape is reported
    /// here with the tensor's name and expected shape instead of as a native failure (or, for a too-short
    /// buffer, a read past its end, which the native side cannot detect).
    /// </summary>
    /// <exception cref="ArgumentException">A count is not positive, or a tensor has the wrong number of values.</exception>
    public void Validate(FluxTransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (Batch < 1 || ImageTokens < 1 || TextTokens < 1)
        {
            throw new ArgumentException(
                $"Batch, ImageTokens and TextTokens must all be at least 1; they are B={Batch}, Limg={ImageTokens}, Ltxt={TextTokens}.", "inputs");
        }

        string b = $"B={Batch}";
        string limg = $"Limg={ImageTokens}";
        string ltxt = $"Ltxt={TextTokens}";
        CheckLength("img", Img.Length, [(b, Batch), (limg, ImageTokens), ($"in_channels={config.InChannels}", config.InChannels)]);
        CheckLength("img_ids", ImgIds.Length, [(b, Batch), (limg, ImageTokens), ("3", 3)]);
        CheckLength("txt", Txt.Length, [(b, Batch), (ltxt, TextTokens), ($"context_in_dim={config.ContextInDim}", config.ContextInDim)]);
        CheckLength("txt_ids", TxtIds.Length, [(b, Batch), (ltxt, TextTokens), ("3", 3)]);
        CheckLength("y", Y.Length, [(b, Batch), ($"vec_in_dim={config.VecInDim}", config.VecInDim)]);
        CheckLength("timesteps", Timesteps.Length, [(b, Batch)]);
        if (StepCaches is not null && StepCaches.Count != Batch)
        {
            throw new ArgumentException($"StepCaches has {StepCaches.Count} entries but the batch has B={Batch} samples.", "inputs");
        }

        if (!BlocksComputed.IsEmpty && BlocksComputed.Length != Batch)
        {
            throw new ArgumentException($"BlocksComputed has {BlocksComputed.Length} values but the batch has B={Batch} samples.", "inputs");
        }

        if (!Guidance.IsEmpty)
        {
            CheckLength("guidance", Guidance.Length, [(b, Batch)]);
        }
        else if (config.GuidanceEmbed)
        {
            throw new ArgumentException(
                $"guidance is missing but this model has a guidance embedder (dev) and needs [{b}] guidance scales.", "inputs");
        }
    }

    private static void CheckLength(string tensor, int length, ReadOnlySpan<(string Label, int Size)> shape)
    {
        long needed = 1;
        foreach ((_, int size) in shape)
        {
            needed *= size;
        }

        if (length != needed)
        {
            var labels = new string[shape.Length];
            for (int i = 0; i < shape.Length; i++)
            {
                labels[i] = shape[i].Label;
            }

            throw new ArgumentException($"{tensor} has {length} values but [{string.Join(", ", labels)}] needs {needed}.", "inputs");
        }
    }
}
