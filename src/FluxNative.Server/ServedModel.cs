using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;

namespace FluxNative.Server;

/// <summary>
/// Which model this server serves, under which names: Replicate's <c>owner/name</c> (by default the one of the loaded
/// variant, <c>black-forest-labs/flux-dev</c> or <c>black-forest-labs/flux-schnell</c>; <see cref="FluxServerOptions.ModelNames"/>
/// replaces them) and OpenAI's model id (the name part, <c>flux-dev</c>). A request for any other model is a 404: a
/// server of FLUX.1 [dev] does not answer a request for [schnell] with [dev]'s images.
/// </summary>
internal sealed partial class ServedModel(FluxServerOptions options, ModelHost host)
{
    /// <summary>The Replicate names served; the first is the one predictions without a model name record.</summary>
    public IReadOnlyList<string> Names => options.ModelNames.Count > 0
        ? options.ModelNames
        : [host.Pipeline.Variant == FluxVariant.Schnell ? "black-forest-labs/flux-schnell" : "black-forest-labs/flux-dev"];

    public string Primary => Names[0];

    /// <summary>OpenAI's id of a Replicate name: the part after the owner.</summary>
    public static string OpenAiId(string name) => name[(name.IndexOf('/', StringComparison.Ordinal) + 1)..];

    /// <summary>Whether <paramref name="name"/> can name a model at all (<c>owner/name</c>, each letters, digits, '.', '_', '-').</summary>
    public static bool IsModelName(string name) => ModelName().IsMatch(name);

    /// <summary>The served name that <paramref name="model"/> (<c>owner/name</c>) asks for; a 404 when it is not served.</summary>
    public string Resolve(string model) =>
        Names.FirstOrDefault(n => n.Equals(model, StringComparison.OrdinalIgnoreCase))
        ?? throw new ApiException(StatusCodes.Status404NotFound,
            $"No model '{Shorten(model)}' on this server: it serves {string.Join(", ", Names)}.");

    /// <summary>
    /// The served name for OpenAI's <c>model</c>: absent means the served one; otherwise its id (<c>flux-dev</c>) or its
    /// Replicate name. Anything else is a 404, as OpenAI answers an unknown model.
    /// </summary>
    public string ResolveOpenAi(string? model)
    {
        if (model is null)
        {
            return Primary;
        }

        return Names.FirstOrDefault(n => n.Equals(model, StringComparison.OrdinalIgnoreCase) || OpenAiId(n).Equals(model, StringComparison.OrdinalIgnoreCase))
            ?? throw new ApiException(StatusCodes.Status404NotFound,
                $"The model '{Shorten(model)}' does not exist on this server; it serves {string.Join(", ", Names.Select(OpenAiId))} (GET /v1/models).", "model");
    }

    /// <summary>The inputs this server accepts, with the loaded model's default steps once it is loaded.</summary>
    public IReadOnlyList<InputField> Inputs() =>
        InputContract.ReplicateInputs(options, host.IsReady ? host.Pipeline.DefaultSteps : null);

    /// <summary>A version id for the schema: the same as long as the accepted inputs are (64 hex digits, as Replicate's).</summary>
    public string VersionId() =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(InputContract.OpenApiSchema(Inputs()).ToJsonString() + string.Join(',', Names))));

    /// <summary>Replicate's model object (<c>GET /v1/models/{owner}/{name}</c>), with the input schema in its latest version.</summary>
    public JsonObject ReplicateModel(string name, string baseUrl)
    {
        string[] parts = name.Split('/');
        IReadOnlyList<InputField> inputs = Inputs();
        return new JsonObject
        {
            ["url"] = $"{baseUrl}/v1/models/{name}",
            ["owner"] = parts[0],
            ["name"] = parts[1],
            ["description"] = $"FLUX.1 text-to-image, served by FluxNative: {host.Description ?? "loading"}.",
            ["visibility"] = "public",
            ["github_url"] = null,
            ["paper_url"] = null,
            ["license_url"] = null,
            ["run_count"] = 0,
            ["cover_image_url"] = null,
            ["default_example"] = null,
            ["latest_version"] = new JsonObject
            {
                ["id"] = VersionId(),
                ["created_at"] = null,
                ["cog_version"] = null,
                ["openapi_schema"] = InputContract.OpenApiSchema(inputs),
            },
        };
    }

    /// <summary>OpenAI's model object.</summary>
    public static JsonObject OpenAiModel(string name) => new()
    {
        ["id"] = OpenAiId(name),
        ["object"] = "model",
        ["created"] = 0,
        ["owned_by"] = name[..name.IndexOf('/', StringComparison.Ordinal)],
    };

    private static string Shorten(string text) => text.Length > 100 ? text[..100] + "…" : text;

    [GeneratedRegex("^[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}$")]
    private static partial Regex ModelName();
}
