namespace FluxNative;

/// <summary>The kinds of device a model can be loaded on.</summary>
public enum FluxDeviceKind
{
    /// <summary>The CPU backend (AVX-512, AVX2 or portable kernels, chosen at run time).</summary>
    Cpu,

    /// <summary>An NVIDIA GPU through the CUDA backend.</summary>
    Cuda,
}

/// <summary>
/// Where a model lives and runs: <c>cpu</c>, <c>cuda</c> (the first GPU) or <c>cuda:N</c>. A device that
/// cannot be used (a library built without CUDA, no driver, no such GPU) fails the load with a
/// <see cref="FluxNativeException"/> that names what is missing; it never falls back to the CPU.
/// </summary>
public readonly record struct FluxDevice
{
    private FluxDevice(FluxDeviceKind kind, int index)
    {
        Kind = kind;
        Index = index;
    }

    /// <summary>The CPU.</summary>
    public static FluxDevice Cpu => new(FluxDeviceKind.Cpu, 0);

    /// <summary>The kind of device.</summary>
    public FluxDeviceKind Kind { get; }

    /// <summary>The GPU's ordinal for <see cref="FluxDeviceKind.Cuda"/>; 0 for the CPU.</summary>
    public int Index { get; }

    /// <summary>The CUDA GPU with ordinal <paramref name="index"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative.</exception>
    public static FluxDevice Cuda(int index = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return new FluxDevice(FluxDeviceKind.Cuda, index);
    }

    /// <summary>Parses <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    /// <exception cref="FormatException">Anything else; the message lists the accepted forms.</exception>
    public static FluxDevice Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (TryParse(text, out FluxDevice device))
        {
            return device;
        }

        throw new FormatException($"\"{text}\" is not a device: use cpu, cuda or cuda:N.");
    }

    /// <summary>Parses <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>; false for anything else.</summary>
    public static bool TryParse(string? text, out FluxDevice device)
    {
        device = Cpu;
        if (text == "cpu")
        {
            return true;
        }

        if (text == "cuda")
        {
            device = Cuda(0);
            return true;
        }

        if (text is not null && text.StartsWith("cuda:", StringComparison.Ordinal) && text.Length is > 5 and <= 8
            && text.AsSpan(5).IndexOfAnyExceptInRange('0', '9') < 0)
        {
            device = Cuda(int.Parse(text.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture));
            return true;
        }

        return false;
    }

    /// <summary><c>cpu</c> or <c>cuda:N</c>, the form <see cref="Parse"/> and the native library accept.</summary>
    public override string ToString() => Kind == FluxDeviceKind.Cpu ? "cpu" : $"cuda:{Index}";

    /// <summary>The name as a NUL-terminated UTF-8 string for the native load parameters.</summary>
    internal byte[] ToUtf8Z() => System.Text.Encoding.UTF8.GetBytes(ToString() + "\0");
}
