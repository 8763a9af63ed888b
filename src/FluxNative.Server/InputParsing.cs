using System.Globalization;
using System.Text.Json;

namespace FluxNative.Server;

/// <summary>What either API asked for, in the pipeline's terms (before <see cref="FluxPipeline.Plan"/> checks ranges).</summary>
internal sealed record GenerationSpec
{
    public required string Prompt { get; init; }

    public string? AspectRatio { get; init; }

    public int? ImageSize { get; init; }

    public int? Width { get; init; }

    public int? Height { get; init; }

    public int? Steps { get; init; }

    public double? Guidance { get; init; }

    public long? Seed { get; init; }

    public int NumImages { get; init; } = 1;

    public ImageFormat Format { get; init; } = ImageFormat.Png;

    public int Quality { get; init; } = 80;

    /// <summary>Image-to-image: the decoded input image, or null.</summary>
    public RgbImage? Image { get; init; }

    /// <summary>Image-to-image strength (null: the pipeline's default with an image).</summary>
    public double? Strength { get; init; }

    /// <summary>What the server changed in the request (a ratio mapped to the nearest one), for the logs.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>The step caching asked for (<c>speed_mode</c>, or <c>go_fast</c>); lossless by default.</summary>
    public SpeedMode SpeedMode { get; init; }

    /// <summary>The API's name for each of the pipeline's field names (steps → num_inference_steps …).</summary>
    public required IReadOnlyDictionary<string, string> FieldNames { get; init; }
}

/// <summary>The body of <c>POST /v1/images/generations</c>; <c>Model</c> as asked for (null: the served one; <see cref="ServedModel.ResolveOpenAi"/>).</summary>
internal sealed record OpenAiImageRequest(GenerationSpec Spec, bool Base64, string? Model);

/// <summary>Parses the OpenAI and Replicate request shapes into a <see cref="GenerationSpec"/>.</summary>
internal static class InputParsing
{
    /// <summary>The speed mode <c>go_fast: true</c> asks for (Replicate's flag for "faster, at a small quality cost").</summary>
    public const SpeedMode GoFastMode = SpeedMode.ExtraJuiced;

    private static readonly Dictionary<string, string> OpenAiFields = new()
    {
        ["steps"] = "num_inference_steps",
        ["num_outputs"] = "n",
        ["width"] = "size",
        ["height"] = "size",
        ["image_size"] = "resolution",
        ["output_quality"] = "output_compression",
    };

    private static readonly Dictionary<string, string> ReplicateFields = new()
    {
        ["steps"] = "input.num_inference_steps",
        ["num_outputs"] = "input.num_outputs",
        ["width"] = "input.width",
        ["height"] = "input.height",
        ["image_size"] = "input.image_size",
        ["aspect_ratio"] = "input.aspect_ratio",
        ["guidance"] = "input.guidance",
        ["seed"] = "input.seed",
        ["output_format"] = "input.output_format",
        ["output_quality"] = "input.output_quality",
        ["prompt"] = "input.prompt",
        ["image"] = "input.image",
        ["strength"] = "input.prompt_strength",
    };

    /// <summary>OpenAI's <c>quality</c> values: those this server honours (its default steps), and those it refuses, with why.</summary>
    private static readonly OpenAiChoice Quality = new("quality", ["auto", "standard"], new()
    {
        ["hd"] = HowToSetQuality,
        ["high"] = HowToSetQuality,
        ["medium"] = HowToSetQuality,
        ["low"] = HowToSetQuality,
    });

    private static readonly OpenAiChoice Style = new("style", [], new()
    {
        ["vivid"] = "FLUX has no style switch; describe the style in the prompt",
        ["natural"] = "FLUX has no style switch; describe the style in the prompt",
    });

    private static readonly OpenAiChoice Background = new("background", ["auto", "opaque"], new()
    {
        ["transparent"] = "FLUX generates opaque images; there is no alpha channel",
    });

    private static readonly OpenAiChoice Moderation = new("moderation", ["low"], new()
    {
        ["auto"] = "this server has no content moderation; only 'low' (no filtering) describes what it does",
    });

    private const string HowToSetQuality = "this server has no quality tiers; trade speed for detail with num_inference_steps (1-50) instead";

    public static OpenAiImageRequest ParseOpenAi(JsonElement body, FluxServerOptions options)
    {
        var fields = new JsonFields(body);
        InputContract.RefuseOthers(fields, InputContract.OpenAiFields, "a parameter of POST /v1/images/generations");
        var notes = new List<string>();
        string prompt = Prompt(fields, options);
        string? model = fields.String("model");
        int n = fields.Int("n", 1, FluxPipeline.MaxImages) ?? 1;
        _ = fields.String("user", 256);   // kept with the prediction's input, as OpenAI keeps it for abuse monitoring
        foreach (OpenAiChoice choice in new[] { Quality, Style, Background, Moderation })
        {
            choice.Check(fields);
        }

        if (fields.Bool("stream") == true)
        {
            throw InputContract.Unsupported("stream",
                "streaming partial images is not implemented; leave stream out (the answer comes when the images are done), or create the " +
                "prediction through Replicate's POST /v1/models/{owner}/{name}/predictions and follow its stream URL for progress.");
        }

        if (fields.Int("partial_images", 0, 3) is > 0)
        {
            throw InputContract.Unsupported("partial_images", "partial images need streaming, which is not implemented.");
        }

        string responseFormat = fields.String("response_format") ?? "url";
        bool base64 = responseFormat switch
        {
            "url" => false,
            "b64_json" => true,
            _ => throw ApiException.BadRequest($"response_format must be url or b64_json (got '{responseFormat}').", "response_format"),
        };

        ImageFormat format = Format(fields, "output_format", ImageFormat.Png, "png, jpeg or webp");
        int quality = Math.Max(1, fields.Int("output_compression", 0, 100) ?? 100);

        int? width = null, height = null, imageSize = null;
        string? ratio = null;
        string? size = fields.String("size", 32);
        if (size is not null && !size.Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            (width, height) = ParseSize(size);
            if (fields.Has("aspect_ratio") || fields.Has("resolution"))
            {
                notes.Add($"size {size} was given, so aspect_ratio and resolution were ignored.");
            }
        }
        else
        {
            string? requestedRatio = fields.String("aspect_ratio", 32);
            if (requestedRatio is not null)
            {
                ratio = NearestAspectRatio(requestedRatio, "aspect_ratio", notes);
            }

            imageSize = Resolution(fields, "resolution");
            if (imageSize is not null)
            {
                ratio ??= "1:1";
            }
        }

        var spec = new GenerationSpec
        {
            Prompt = prompt,
            AspectRatio = ratio,
            ImageSize = imageSize,
            Width = width,
            Height = height,
            Steps = fields.Int("num_inference_steps"),
            Guidance = fields.Number("guidance") ?? fields.Number("guidance_scale"),
            Seed = fields.Long("seed"),
            NumImages = n,
            Format = format,
            Quality = quality,
            Notes = notes,
            FieldNames = OpenAiFields,
        };
        return new OpenAiImageRequest(spec, base64, model);
    }

    /// <summary>The names of the inputs <see cref="ParseReplicateInput"/> reads (the schema's).</summary>
    public static IEnumerable<string> ReplicateInputNames(FluxServerOptions options) => InputContract.ReplicateInputs(options, null).Select(i => i.Name);

    /// <summary>Parses Replicate's <c>input</c> object (the fields of the FLUX models on Replicate).</summary>
    public static GenerationSpec ParseReplicateInput(JsonFields input, FluxServerOptions options)
    {
        InputContract.RefuseOthers(input, ReplicateInputNames(options), "an input of this model");
        var notes = new List<string>();
        string prompt = Prompt(input, options);
        SpeedMode speedMode = SpeedMode.Lossless;
        if (input.String("speed_mode", 100) is { } speed && !SpeedModes.TryParse(speed, out speedMode))
        {
            throw ApiException.BadRequest(
                $"{input.Name("speed_mode")} must be one of {string.Join(", ", SpeedModes.Names)} (or default, which is lossless); got '{speed}'.",
                input.Name("speed_mode"));
        }

        if (input.Bool("go_fast") is { } goFast)
        {
            if (input.Get("speed_mode") is not null)
            {
                throw ApiException.BadRequest(
                    $"Give {input.Name("speed_mode")} or {input.Name("go_fast")}, not both (go_fast true is speed_mode {SpeedModes.Name(GoFastMode)}).",
                    input.Name("go_fast"));
            }

            speedMode = goFast ? GoFastMode : SpeedMode.Lossless;
        }

        if (input.Bool("prompt_upsampling") == true)
        {
            throw InputContract.Unsupported(input.Name("prompt_upsampling"), InputContract.Unimplemented["prompt_upsampling"] + ".");
        }

        if (input.Bool("disable_safety_checker") == false)
        {
            // Asked for a safety checker that does not exist: said in the logs rather than passed over in silence.
            notes.Add("disable_safety_checker is false, but this server has no safety checker: the images are not filtered.");
        }
        int? width = input.Int("width"), height = input.Int("height");
        string? ratio = input.String("aspect_ratio", 32);
        if (ratio is not null && ratio.Equals("custom", StringComparison.OrdinalIgnoreCase))
        {
            ratio = null;
            if (width is null || height is null)
            {
                throw ApiException.BadRequest("input.aspect_ratio 'custom' needs input.width and input.height.", input.Name("aspect_ratio"));
            }
        }
        else if (ratio is not null)
        {
            ratio = NearestAspectRatio(ratio, input.Name("aspect_ratio"), notes);
        }

        int? imageSize = input.Int("image_size");
        if (imageSize is null && input.Get("megapixels") is not null)
        {
            string megapixels = input.String("megapixels", 8)!;
            imageSize = megapixels switch
            {
                "1" => 1024,
                "0.25" => 512,
                _ => throw ApiException.BadRequest($"input.megapixels must be \"1\" or \"0.25\" (got '{megapixels}').", input.Name("megapixels")),
            };
        }

        return new GenerationSpec
        {
            Prompt = prompt,
            AspectRatio = ratio,
            ImageSize = imageSize,
            Width = width,
            Height = height,
            Steps = input.Int("num_inference_steps"),
            Guidance = input.Number("guidance") ?? input.Number("guidance_scale"),
            Seed = input.Long("seed"),
            NumImages = input.Int("num_outputs", 1, FluxPipeline.MaxImages) ?? 1,
            Format = Format(input, "output_format", ImageFormat.Webp, "webp, jpg or png"),
            Quality = Math.Max(1, input.Int("output_quality", 0, 100) ?? 80),
            Image = input.Get("image") is not null ? InputImages.Read(input.String("image", int.MaxValue), input.Name("image")) : null,
            Strength = input.Number("prompt_strength"),
            SpeedMode = speedMode,
            Notes = notes,
            FieldNames = ReplicateFields,
        };
    }

    /// <summary>Maps "W:H" to the supported ratio nearest in log-ratio; anything not of that shape is a 400.</summary>
    public static string NearestAspectRatio(string text, string field, List<string> notes)
    {
        string trimmed = text.Trim();
        if (FluxPipeline.AspectRatios.ContainsKey(trimmed))
        {
            return trimmed;
        }

        string[] parts = trimmed.Split(':');
        if (parts.Length != 2
            || !double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double w)
            || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double h)
            || !(w > 0 && h > 0 && w <= 10_000 && h <= 10_000))
        {
            throw ApiException.BadRequest(
                $"{field} must be a ratio W:H such as {string.Join(", ", FluxPipeline.AspectRatios.Keys)} (got '{text}').", field);
        }

        double target = Math.Log(w / h);
        string best = FluxPipeline.AspectRatios
            .OrderBy(r => Math.Abs(Math.Log((double)r.Value.Width / r.Value.Height) - target))
            .First().Key;
        notes.Add($"{field} {trimmed} is not supported; using the nearest supported ratio, {best}.");
        return best;
    }

    private static string Prompt(JsonFields fields, FluxServerOptions options)
    {
        string? prompt = fields.String("prompt", options.MaxPromptLength);
        if (string.IsNullOrWhiteSpace(prompt))
        {
            throw ApiException.BadRequest($"{fields.Name("prompt")} is required: a non-empty string.", fields.Name("prompt"));
        }

        return prompt;
    }

    private static ImageFormat Format(JsonFields fields, string field, ImageFormat fallback, string choices)
    {
        string? text = fields.String(field, 16);
        if (text is null)
        {
            return fallback;
        }

        return Images.TryParseFormat(text, out ImageFormat format)
            ? format
            : throw ApiException.BadRequest($"{fields.Name(field)} must be {choices} (got '{text}').", fields.Name(field));
    }

    private static (int Width, int Height) ParseSize(string size)
    {
        string[] parts = size.Trim().Split('x', 'X');
        if (parts.Length == 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int width)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int height)
            && width > 0 && height > 0)
        {
            return (width, height);
        }

        throw ApiException.BadRequest($"size must be WIDTHxHEIGHT in pixels, such as 1024x1024, or auto (got '{size}').", "size");
    }

    /// <summary>A resolution tier: "0.5K", "1K", "2K" (longest side ×1024 px) or a number of pixels (a string or a number).</summary>
    private static int? Resolution(JsonFields fields, string field)
    {
        if (fields.Get(field) is not { } element)
        {
            return null;
        }

        if (element.ValueKind == JsonValueKind.Number)
        {
            return fields.Int(field, 1, 100_000);
        }

        string text = fields.String(field, 16)!.Trim();
        if (text.EndsWith('K') || text.EndsWith('k'))
        {
            if (double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double kilo) && kilo > 0 && kilo <= 16)
            {
                return (int)Math.Round(kilo * 1024);
            }
        }
        else if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pixels) && pixels > 0)
        {
            return pixels;
        }

        throw ApiException.BadRequest($"resolution must be a tier such as 0.5K, 1K or 2K, or the longest side in pixels (got '{text}').", field);
    }
}

/// <summary>An OpenAI enumerated option: the values honoured, those refused with a reason (422), and any other value (400).</summary>
internal sealed record OpenAiChoice(string Field, string[] Honoured, Dictionary<string, string> Refused)
{
    public void Check(JsonFields fields)
    {
        if (fields.String(Field, 32) is not { } value || Honoured.Contains(value, StringComparer.Ordinal))
        {
            return;
        }

        if (Refused.TryGetValue(value, out string? reason))
        {
            throw InputContract.Unsupported(Field, $"'{value}': {reason}.");
        }

        throw ApiException.BadRequest(
            $"{Field} must be one of {string.Join(", ", Honoured.Concat(Refused.Keys).Select(v => $"'{v}'"))} (got '{value}').", Field);
    }
}
