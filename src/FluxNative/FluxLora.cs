using System.Globalization;

namespace FluxNative;

/// <summary>
/// A LoRA file merged into the transformer's weights when it loads (docs/lora.md): its modules may be named as
/// BFL/ComfyUI, diffusers/PEFT, kohya or XLabs name them. Every tensor must map onto the model, else the load fails
/// with a message naming it.
/// </summary>
/// <param name="Path">The LoRA's <c>.safetensors</c> file.</param>
/// <param name="Strength">How strongly it applies: 1 as trained, 0.5 half, negative subtracts it.</param>
public sealed record FluxLora(string Path, float Strength = 1f)
{
    /// <summary>Parses <c>FILE</c> or <c>FILE:STRENGTH</c> (the CLI's <c>--lora</c>); a colon followed by something that is not a number is part of the path.</summary>
    /// <exception cref="FormatException">The strength is not a finite number.</exception>
    public static FluxLora Parse(string text)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && colon < text.Length - 1)
        {
            string tail = text[(colon + 1)..];
            if (float.TryParse(tail, NumberStyles.Float, CultureInfo.InvariantCulture, out float strength))
            {
                return float.IsFinite(strength)
                    ? new FluxLora(text[..colon], strength)
                    : throw new FormatException($"The LoRA strength '{tail}' is not a finite number.");
            }
        }

        return new FluxLora(text);
    }

    /// <summary><c>FILE:STRENGTH</c>, as <see cref="Parse"/> reads it.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Path}:{Strength}");
}
