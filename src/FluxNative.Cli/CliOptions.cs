using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;

namespace FluxNative.Cli;

/// <summary>
/// Options whose bad values are one line naming the option, checked while parsing (before anything loads):
/// numbers with a range (<c>--seed abc</c> is "--seed must be an integer, not 'abc'.", not a .NET type name),
/// thread counts, paths that must exist, and the settings several commands share.
/// </summary>
internal static class CliOptions
{
    /// <summary>The longest T5 sequence any command takes (<c>--max-length</c>): 512, FLUX.1 [dev]'s.</summary>
    public const int MaxT5Length = 512;

    /// <summary>The most native threads <c>--threads</c> accepts.</summary>
    public const int MaxThreads = 4096;

    /// <summary>An optional number in [<paramref name="min"/>, <paramref name="max"/>]; absent is null.</summary>
    public static Option<T?> Number<T>(string name, string description, T min, T max, params string[] aliases)
        where T : struct, INumber<T>, IMinMaxValue<T>
    {
        var option = new Option<T?>(name, aliases) { Description = description };
        option.CustomParser = result => Parse(result, name, min, max);
        return option;
    }

    /// <summary>A number in [<paramref name="min"/>, <paramref name="max"/>] with a default.</summary>
    public static Option<T> Number<T>(string name, string description, T min, T max, T defaultValue, params string[] aliases)
        where T : struct, INumber<T>, IMinMaxValue<T>
    {
        var option = new Option<T>(name, aliases) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.CustomParser = result => Parse(result, name, min, max) ?? defaultValue;
        return option;
    }

    /// <summary><c>--threads N</c>: native threads, 0 (the default) for the process-wide pool, one per core.</summary>
    public static Option<int> Threads(string description = "Native threads; 0 for one per core (the process-wide pool).") =>
        Number("--threads", description, 0, MaxThreads, 0);

    /// <summary><c>--device cpu|cuda|cuda:N</c>: where the models live and run (default cpu).</summary>
    public static Option<FluxDevice> Device()
    {
        var option = new Option<FluxDevice>("--device")
        {
            Description = "Where the models live and run: cpu, cuda or cuda:N. A GPU that cannot be used is an error, never a CPU run.",
            DefaultValueFactory = _ => FluxDevice.Cpu,
        };
        option.CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "cpu";
            if (FluxDevice.TryParse(text, out FluxDevice device))
            {
                return device;
            }

            result.AddError($"--device must be cpu, cuda or cuda:N, not '{text}'.");
            return FluxDevice.Cpu;
        };
        return option;
    }

    /// <summary><c>--max-length N</c>: T5 tokens per prompt, 1–512.</summary>
    public static Option<int?> T5MaxLength(string description) => Number<int>("--max-length", description, 1, MaxT5Length);

    /// <summary>A path option whose file or folder must exist (checked while parsing, so before anything loads).</summary>
    /// <summary>
    /// <c>--lora FILE[:STRENGTH]</c>, repeatable: LoRA files merged into the transformer at load, each checked to
    /// exist and to carry a finite strength while parsing.
    /// </summary>
    public static Option<FluxLora[]> Loras()
    {
        var option = new Option<FluxLora[]>("--lora")
        {
            Description = "A LoRA to merge into the transformer: FILE or FILE:STRENGTH (default 1; negative subtracts). Repeat for several. " +
                "BFL/ComfyUI, diffusers/PEFT, kohya and XLabs namings are read; a tensor that does not fit the model is an error.",
            AllowMultipleArgumentsPerToken = false,
            DefaultValueFactory = _ => [],
        };
        option.CustomParser = result =>
        {
            var loras = new List<FluxLora>();
            foreach (var token in result.Tokens)
            {
                FluxLora lora;
                try
                {
                    lora = FluxLora.Parse(token.Value);
                }
                catch (FormatException e)
                {
                    result.AddError($"--lora {token.Value}: {e.Message}");
                    return [];
                }

                if (!File.Exists(lora.Path))
                {
                    result.AddError($"--lora: no such file: {lora.Path}");
                    return [];
                }

                loras.Add(lora);
            }

            return [.. loras];
        };
        return option;
    }

    public static Option<string?> ExistingPath(string name, string description, params string[] aliases)
    {
        var option = new Option<string?>(name, aliases) { Description = description };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string?>() is { } path && !File.Exists(path) && !Directory.Exists(path))
            {
                result.AddError($"{name}: no such file or folder: {path}");
            }
        });
        return option;
    }

    /// <summary>Reports <paramref name="message"/> on <paramref name="option"/>'s result when it was given, else on the command.</summary>
    public static void AddError(this CommandResult command, Option option, string message)
    {
        if (command.GetResult(option) is { } result)
        {
            result.AddError(message);
        }
        else
        {
            command.AddError(message);
        }
    }

    /// <summary>
    /// The value a command's validator checks: the one given, or <paramref name="fallback"/> when the option is absent
    /// (a command's validators see no defaults). False when the value is itself in error, which its own message reports.
    /// </summary>
    public static bool TryGetValue<T>(this CommandResult command, Option<T> option, T fallback, out T value)
    {
        value = fallback;
        if (command.GetResult(option) is not { Implicit: false } result)
        {
            return true;
        }

        try
        {
            value = result.GetValueOrDefault<T>();
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;   // a value that did not parse
        }
    }

    /// <summary>Whether <paramref name="option"/> appeared on the command line (not only its default).</summary>
    public static bool Given(this CommandResult command, Option option) => command.GetResult(option) is { Implicit: false };

    private static T? Parse<T>(ArgumentResult result, string name, T min, T max)
        where T : struct, INumber<T>, IMinMaxValue<T>
    {
        if (result.Tokens.Count == 0)
        {
            return null;
        }

        string text = result.Tokens[^1].Value;
        bool integer = typeof(T) != typeof(double) && typeof(T) != typeof(float) && typeof(T) != typeof(decimal);
        NumberStyles style = integer ? NumberStyles.AllowLeadingSign : NumberStyles.Float;
        bool parsed = T.TryParse(text, style, CultureInfo.InvariantCulture, out T value);
        string? error = null;
        if (!parsed)
        {
            string digits = text.TrimStart('-', '+');
            bool tooManyDigits = integer && digits.Length > 0 && digits.All(char.IsAsciiDigit);
            if (!tooManyDigits)
            {
                string expected = !integer ? "a number"
                    : double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _) ? "a whole number"
                    : "an integer";
                error = $"{name} must be {expected}, not '{text}'.";
            }
        }

        if (error is null && (!parsed || !(value >= min && value <= max)))
        {
            // Out of range, including digits too many for the type.
            error = string.Create(CultureInfo.InvariantCulture, $"{name} must be between {min} and {max} (got {text}).");
        }

        if (error is not null)
        {
            result.AddError(error);
            return null;
        }

        return value;
    }
}
