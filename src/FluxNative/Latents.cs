using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// The FLUX latent layout (docs/flux-model.md §4.3–4.4): 2×2 patch packing between the autoencoder's <c>[B, C, h, w]</c>
/// and the transformer's tokens <c>[B, (h/2)(w/2), 4C]</c>, the position ids, and the Euler step (§6.2).
/// The loops run natively.
/// </summary>
public static class Latents
{
    /// <summary>Packs <c>[B, C, h, w]</c> (h, w even) into <c>[B, (h/2)(w/2), 4C]</c>.</summary>
    public static unsafe float[] Pack(ReadOnlySpan<float> latents, int batch, int channels, int height, int width)
    {
        float[] packed = GC.AllocateUninitializedArray<float>(latents.Length);
        fixed (float* source = latents)
        fixed (float* destination = packed)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_latents_pack(source, batch, channels, height, width, destination, (nuint)latents.Length));
        }

        return packed;
    }

    /// <summary>Unpacks <c>[B, (h/2)(w/2), 4C]</c> into <c>[B, C, h, w]</c>: the exact inverse of <see cref="Pack"/>.</summary>
    public static unsafe float[] Unpack(ReadOnlySpan<float> packed, int batch, int channels, int height, int width)
    {
        float[] latents = GC.AllocateUninitializedArray<float>(packed.Length);
        fixed (float* source = packed)
        fixed (float* destination = latents)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_latents_unpack(source, batch, channels, height, width, destination, (nuint)packed.Length));
        }

        return latents;
    }

    /// <summary>
    /// Image position ids <c>[B, (h/2)(w/2), 3]</c>: token n gets (0, n / (w/2), n mod (w/2)), i.e. (0, patch row, patch column).
    /// </summary>
    public static float[] ImageIds(int batch, int height, int width)
    {
        int rows = height / 2, columns = width / 2, tokens = rows * columns;
        var ids = new float[checked(batch * tokens * 3)];
        for (int b = 0; b < batch; b++)
        {
            for (int n = 0; n < tokens; n++)
            {
                int at = (b * tokens + n) * 3;
                ids[at + 1] = n / columns;
                ids[at + 2] = n % columns;
            }
        }

        return ids;
    }

    /// <summary>Text position ids <c>[B, Ltxt, 3]</c>: all zero for FLUX.1.</summary>
    public static float[] TextIds(int batch, int textTokens) => new float[checked(batch * textTokens * 3)];

    /// <summary>One Euler step of the flow ODE, in place: x += dt·v (dt = t_next − t_current, negative when denoising).</summary>
    public static unsafe void EulerStep(Span<float> x, ReadOnlySpan<float> velocity, float dt)
    {
        if (x.Length != velocity.Length)
        {
            throw new ArgumentException($"x has {x.Length} values but velocity has {velocity.Length}.", nameof(velocity));
        }

        fixed (float* state = x)
        fixed (float* v = velocity)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_euler_step(state, v, (nuint)x.Length, dt));
        }
    }
}
