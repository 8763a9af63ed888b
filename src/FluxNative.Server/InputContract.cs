using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Server;

/// <summary>One input a request may carry: its JSON Schema (for <c>GET /v1/models/{owner}/{name}</c>) and nothing more.</summary>
internal sealed record InputField(string Name, string Type, string Description)
{
    public double? Minimum { get; init; }

    public double? Maximum { get; init; }

    public int? MaxLength { get; init; }

    public IReadOnlyList<JsonNode?>? Enum { get; init; }

    public JsonNode? Default { get; init; }

    public bool Required { get; init; }

    /// <summary>The JSON Schema string format ("uri"), or null.</summary>
    public string? Format { get; init; }

    public JsonObject Schema(int order)
    {
        var schema = new JsonObject { ["type"] = Type, ["title"] = Title(Name), ["description"] = Description, ["x-order"] = order };
        if (Format is { } format)
        {
            schema["format"] = format;
        }

        if (Minimum is { } min)
        {
            schema["minimum"] = min;
        }

        if (Maximum is { } max)
        {
            schema["maximum"] = max;
        }

        if (MaxLength is { } length)
        {
            schema["maxLength"] = length;
        }

        if (Enum is { } values)
        {
            schema["enum"] = new JsonArray([.. values.Select(v => v?.DeepClone())]);
        }

        if (Default is not null)
        {
            schema["default"] = Default.DeepClone();
        }

        return schema;
    }

    private static string Title(string name) => string.Join(' ', name.Split('_').Select(w => char.ToUpperInvariant(w[0]) + w[1..]));
}

/// <summary>
/// The exact contract of both APIs' request bodies: the fields this server implements (the rest of the server reads
/// them; <see cref="InputParsing"/>), and a refusal, naming each one, of every other field. Fields that the hosted FLUX
/// models or OpenAI have but this engine does not implement are refused with the reason, never silently dropped.
/// </summary>
internal static class InputContract
{
    /// <summary>The top-level fields of a Replicate create (<c>POST /v1/predictions</c>, <c>/v1/models/{owner}/{name}/predictions</c>).</summary>
    public static readonly string[] ReplicateRequestFields = ["version", "input", "webhook", "webhook_completed", "webhook_events_filter", "stream"];

    /// <summary>The fields of OpenAI's <c>POST /v1/images/generations</c> this server reads, with FLUX's own (<c>extra_body</c>).</summary>
    public static readonly string[] OpenAiFields =
    [
        "prompt", "model", "n", "size", "response_format", "output_format", "output_compression", "quality", "style", "background", "moderation",
        "stream", "partial_images", "user", "seed", "num_inference_steps", "guidance", "guidance_scale", "aspect_ratio", "resolution",
    ];

    /// <summary>
    /// Inputs of the FLUX models on Replicate and of OpenAI's images API that this engine does not implement, and why.
    /// A value in <see cref="HarmlessValues"/> asks for nothing and is accepted; any other is a 422.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> Unimplemented = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["image"] = "an input image is image-to-image, which OpenAI's API does through POST /v1/images/edits (not implemented by this server yet); " +
            "on the Replicate routes, use image and prompt_strength",
        ["input_image"] = "this is FLUX Kontext's image input, which this server does not implement; for image-to-image use image and prompt_strength",
        ["image_prompt"] = "image prompts (FLUX Redux) are not implemented by this server",
        ["image_prompt_strength"] = "image prompts (FLUX Redux) are not implemented by this server",
        ["control_image"] = "control images (FLUX Canny/Depth) are not implemented by this server",
        ["strength"] = "this is diffusers' name; this server's field is prompt_strength",
        ["mask"] = "inpainting (a mask) is not implemented by this server",
        ["lora_weights"] = "LoRA weights are not implemented by this server",
        ["lora_scale"] = "LoRA weights are not implemented by this server",
        ["extra_lora"] = "LoRA weights are not implemented by this server",
        ["extra_lora_scale"] = "LoRA weights are not implemented by this server",
        ["hf_lora"] = "LoRA weights are not implemented by this server",
        ["safety_tolerance"] = "this server has no safety filter, so there is no tolerance to set",
        ["prompt_upsampling"] = "prompt upsampling (rewriting the prompt with a language model) is not implemented by this server",
        ["raw"] = "FLUX1.1 [pro] ultra's raw mode is not implemented by this server",
        ["steps"] = "this is flux-pro's name; this server's field is num_inference_steps",
        ["interval"] = "flux-pro's interval is not implemented by this server",
        ["negative_prompt"] = "FLUX.1 has no negative prompt",
        ["true_cfg"] = "true classifier-free guidance is not implemented by this server; use guidance",
    };

    /// <summary>Values of unimplemented fields that ask for nothing: <c>prompt_upsampling: false</c> is what this server does anyway.</summary>
    private static readonly Dictionary<string, Func<JsonElement, bool>> HarmlessValues = new(StringComparer.Ordinal)
    {
        ["prompt_upsampling"] = v => v.ValueKind == JsonValueKind.False,
        ["raw"] = v => v.ValueKind == JsonValueKind.False,
    };

    /// <summary>The inputs of Replicate's <c>input</c> object this server implements, in the order of its schema.</summary>
    /// <param name="options">The server's limits (sizes, prompt length).</param>
    /// <param name="defaultSteps">The loaded model's default steps (28 for dev, 4 for schnell), or null before it is loaded.</param>
    public static IReadOnlyList<InputField> ReplicateInputs(FluxServerOptions options, int? defaultSteps)
    {
        int min = options.EffectiveMinImageSide, max = options.MaxImageSide;
        string side = $"{min}-{max} pixels, rounded to a multiple of 16";
        return
        [
            new("prompt", "string", "What to generate.") { Required = true, MaxLength = options.MaxPromptLength },
            new("aspect_ratio", "string",
                "The image's aspect ratio; 'custom' takes width and height. Another W:H ratio maps to the nearest supported one (noted in the logs).")
            {
                Enum = [.. FluxPipeline.AspectRatios.Keys.Append("custom").Select(r => (JsonNode?)r)],
                Default = "1:1",
            },
            new("image_size", "integer", $"The longest side in pixels ({side}; default {FluxPipeline.DefaultImageSize}).") { Minimum = min, Maximum = max },
            new("width", "integer", $"The width in pixels ({side}); with height, and with aspect_ratio 'custom' or none.") { Minimum = min, Maximum = max },
            new("height", "integer", $"The height in pixels ({side}); with width.") { Minimum = min, Maximum = max },
            new("megapixels", "string", "The image's area instead of image_size: '1' (1024 px longest side) or '0.25' (512 px).") { Enum = ["1", "0.25"] },
            new("image", "string",
                "Image-to-image: the image to start from, as a data: URI (base64 PNG, JPEG or WebP; URLs are not fetched). The output takes its size " +
                "(scaled into the size limits) unless width and height, aspect_ratio or image_size are given.") { Format = "uri" },
            new("prompt_strength", "number",
                $"Image-to-image: how much of the image is replaced, over 0 up to 1; the steps start at (1 - prompt_strength) of the way.")
            {
                Maximum = 1, Default = FluxPipeline.DefaultStrength,   // no minimum: 0 itself is refused (it would return the image)
            },
            new("num_outputs", "integer", "How many images to generate (seeds seed, seed+1, …).") { Minimum = 1, Maximum = FluxPipeline.MaxImages, Default = 1 },
            new("num_inference_steps", "integer", "Denoising steps.") { Minimum = 1, Maximum = 50, Default = defaultSteps is { } steps ? JsonValue.Create(steps) : null },
            new("guidance", "number", "Guidance scale (FLUX.1 [dev]'s distilled guidance).") { Minimum = 0, Maximum = 10, Default = FluxPipeline.DefaultGuidance },
            new("guidance_scale", "number", "The same as guidance (diffusers' name).") { Minimum = 0, Maximum = 10 },
            new("seed", "integer", "Random seed; -1 or absent draws one (the prediction's logs and metrics say which).") { Minimum = -1 },
            new("output_format", "string", "The image file format ('jpeg' is also accepted for jpg).") { Enum = ["webp", "jpg", "png"], Default = "webp" },
            new("output_quality", "integer", "Quality of jpg and webp output, 0-100 (png is lossless).") { Minimum = 0, Maximum = 100, Default = 80 },
            new("disable_safety_checker", "boolean",
                "Accepted for compatibility: this server has no safety checker, so images are never filtered (with false, the logs say so).") { Default = false },
            new("speed_mode", "string",
                "Step caching: lossless (none; 'default' is the same), juiced, extra_juiced or fastest, each reusing more transformer work between " +
                "steps at a measured quality cost (the server's README). Labels such as 'Extra Juiced 🚀 (even more speed)' are read by their words.")
            {
                Enum = [.. SpeedModes.Names.Prepend("default").Select(n => (JsonNode?)n)], Default = "default",
            },
            new("go_fast", "boolean",
                $"true: speed_mode {SpeedModes.Name(InputParsing.GoFastMode)}; false: lossless. Weight precision is the server's (flux serve --weights-dtype), not the request's.")
            {
                Default = false,
            },
            new("prompt_upsampling", "boolean", "Only false: prompt upsampling is not implemented.") { Enum = [false], Default = false },
        ];
    }

    /// <summary>
    /// Refuses (422) every field of <paramref name="fields"/> outside <paramref name="accepted"/>: the unimplemented
    /// ones with the reason, any other as not a field of this request. All of them at once, so one answer names them all.
    /// A null value is an absent field and is not refused.
    /// </summary>
    /// <param name="fields">The object.</param>
    /// <param name="accepted">Its fields.</param>
    /// <param name="what">What the accepted ones are, for the message ("an input of this model").</param>
    /// <param name="hintFor">A hint for a field that is not accepted here (an input given outside <c>input</c>), or null.</param>
    public static void RefuseOthers(JsonFields fields, IEnumerable<string> accepted, string what, Func<string, string?>? hintFor = null)
    {
        var known = new HashSet<string>(accepted, StringComparer.Ordinal);
        var refused = new List<InvalidField>();
        foreach (JsonProperty property in fields.Value.EnumerateObject())
        {
            string name = property.Name;
            if (known.Contains(name) || property.Value.ValueKind == JsonValueKind.Null
                || (HarmlessValues.TryGetValue(name, out Func<JsonElement, bool>? harmless) && harmless(property.Value)))
            {
                continue;
            }

            string field = fields.Name(name);
            refused.Add(Unimplemented.TryGetValue(name, out string? reason)
                ? new InvalidField(field, $"{field} is not supported: {reason}. Leave it out.", "unsupported")
                : new InvalidField(field, hintFor?.Invoke(name) is { } hint
                    ? $"{field} is not {what} ({hint})."
                    : $"{field} is not {what} (they are: {string.Join(", ", known.Order(StringComparer.Ordinal))}).", "unknown"));
        }

        if (refused.Count > 0)
        {
            throw ApiException.Unprocessable(refused);
        }
    }

    /// <summary>A refusal (422) of one known field's value that asks for something this server does not do.</summary>
    public static ApiException Unsupported(string field, string reason) =>
        ApiException.Unprocessable([new InvalidField(field, $"{field} is not supported: {reason}", "unsupported")]);

    /// <summary>Replicate's model schema: an OpenAPI document whose <c>components.schemas.Input</c> is what this server accepts.</summary>
    public static JsonObject OpenApiSchema(IReadOnlyList<InputField> inputs)
    {
        var properties = new JsonObject();
        for (int k = 0; k < inputs.Count; k++)
        {
            properties[inputs[k].Name] = inputs[k].Schema(k);
        }

        return new JsonObject
        {
            ["openapi"] = "3.0.2",
            ["info"] = new JsonObject { ["title"] = "FluxNative", ["version"] = "1.0" },
            ["paths"] = new JsonObject(),
            ["components"] = new JsonObject
            {
                ["schemas"] = new JsonObject
                {
                    ["Input"] = new JsonObject
                    {
                        ["type"] = "object",
                        ["title"] = "Input",
                        ["required"] = new JsonArray([.. inputs.Where(i => i.Required).Select(i => (JsonNode)i.Name)]),
                        ["properties"] = properties,
                        ["additionalProperties"] = false,
                    },
                    ["Output"] = new JsonObject
                    {
                        ["type"] = "array",
                        ["title"] = "Output",
                        ["items"] = new JsonObject { ["type"] = "string", ["format"] = "uri" },
                    },
                },
            },
        };
    }
}
