using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace FluxNative.Server;

/// <summary>The models endpoints: what this server serves, for Replicate's and OpenAI's clients.</summary>
internal static partial class Endpoints
{
    private static void MapModels(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/models", ListModels);
        app.MapGet("/v1/models/{id}", GetOpenAiModel);
        app.MapGet("/v1/models/{owner}/{name}", GetReplicateModel);
    }

    /// <summary>
    /// <c>GET /v1/models</c>: one path, two APIs. OpenAI's list (<c>object</c>, <c>data</c>) and Replicate's page
    /// (<c>results</c>, <c>next</c>, <c>previous</c>) side by side; each client reads its own fields, as with errors.
    /// </summary>
    private static IResult ListModels(HttpContext context, FluxServerOptions options, ServedModel served)
    {
        string baseUrl = BaseUrl(context, options);
        return Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray([.. served.Names.Select(n => (JsonNode)ServedModel.OpenAiModel(n))]),
            ["previous"] = null,
            ["next"] = null,
            ["results"] = new JsonArray([.. served.Names.Select(n => (JsonNode)served.ReplicateModel(n, baseUrl))]),
        });
    }

    /// <summary>OpenAI's <c>GET /v1/models/{model}</c>.</summary>
    private static IResult GetOpenAiModel(string id, ServedModel served) => Json(ServedModel.OpenAiModel(served.ResolveOpenAi(id)));

    /// <summary>Replicate's <c>GET /v1/models/{owner}/{name}</c>: the model, with the input schema this server accepts in its latest version.</summary>
    private static IResult GetReplicateModel(string owner, string name, HttpContext context, FluxServerOptions options, ServedModel served) =>
        Json(served.ReplicateModel(ResolveModel(served, $"{owner}/{name}"), BaseUrl(context, options)));
}
