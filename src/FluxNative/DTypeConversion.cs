using System.Runtime.InteropServices;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>How values beyond a format's largest finite value are converted (mirrors <c>fx_overflow</c>).</summary>
public enum OverflowMode
{
    /// <summary>Clamp to the largest finite value of the sign (what quantisation wants); NaN stays NaN.</summary>
    Saturate = 0,

    /// <summary>Infinity where the format has one (f16, bf16, e5m2); NaN for e4m3fn.</summary>
    Ieee = 1,
}

/// <summary>
/// Converts buffers between floating-point dtypes (f32, f64, f16, bf16, fp8 e4m3fn and e5m2) with the
/// native library's conversions: round to nearest, ties to even, the same bits on every backend.
/// </summary>
public static class DTypeConversion
{
    /// <summary>
    /// Converts every element of <paramref name="source"/> (little-endian <paramref name="sourceType"/>) into
    /// <paramref name="destination"/> as <paramref name="destinationType"/>. <paramref name="overflow"/> applies to fp8 targets;
    /// f16, bf16 and f32 targets always follow IEEE rules.
    /// </summary>
    /// <exception cref="ArgumentException">Sizes that do not fit, or overlapping buffers.</exception>
    /// <exception cref="FluxNativeException">A dtype that is not floating point (<see cref="FluxStatus.InvalidArgument"/> or <see cref="FluxStatus.Unsupported"/>).</exception>
    public static unsafe void Convert(
        DType sourceType, ReadOnlySpan<byte> source, DType destinationType, Span<byte> destination, OverflowMode overflow = OverflowMode.Saturate)
    {
        int sourceSize = sourceType.ElementSize();
        if (source.Length % sourceSize != 0)
        {
            throw new ArgumentException($"{source.Length} bytes is not a whole number of {sourceType} elements.", nameof(source));
        }

        long count = source.Length / sourceSize;
        long needed = count * destinationType.ElementSize();
        if (destination.Length < needed)
        {
            throw new ArgumentException($"{count} {destinationType} elements need {needed} bytes; the destination has {destination.Length}.", nameof(destination));
        }

        // The native conversion reads and writes in blocks; overlapping buffers would read converted output.
        if (source.Overlaps(destination))
        {
            throw new ArgumentException("The source and destination buffers overlap.", nameof(destination));
        }

        fixed (byte* input = source)
        fixed (byte* output = destination)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_convert(
                (int)sourceType, input, (int)destinationType, output, (nuint)count, (int)overflow));
        }
    }

    /// <summary>Converts <paramref name="source"/> (little-endian <paramref name="sourceType"/>) to a new float array.</summary>
    public static float[] ToFloat32(DType sourceType, ReadOnlySpan<byte> source)
    {
        var values = new float[source.Length / sourceType.ElementSize()];
        Convert(sourceType, source, DType.F32, MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    /// <summary>Converts float values to a new buffer of <paramref name="destinationType"/> bytes.</summary>
    public static byte[] FromFloat32(ReadOnlySpan<float> values, DType destinationType, OverflowMode overflow = OverflowMode.Saturate)
    {
        var bytes = new byte[values.Length * destinationType.ElementSize()];
        Convert(DType.F32, MemoryMarshal.AsBytes(values), destinationType, bytes, overflow);
        return bytes;
    }
}
