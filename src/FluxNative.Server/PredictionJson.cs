using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Server;

/// <summary>Prediction objects in the shape of Replicate's HTTP API.</summary>
internal static class PredictionJson
{
    public static JsonObject Render(PredictionView p, string baseUrl, OutputFiles files)
    {
        string self = $"{baseUrl}/v1/predictions/{p.Id}";
        JsonNode? input;
        try
        {
            input = JsonNode.Parse(p.Input);
        }
        catch (JsonException)
        {
            input = p.Input;
        }

        JsonArray? output = p.Output is null ? null : new JsonArray([.. p.Output.Select(name => (JsonNode)files.Url(baseUrl, p.Id, name))]);
        JsonObject? metrics = null;
        if (p.Metrics is not null)
        {
            metrics = [];
            foreach ((string name, double value) in p.Metrics)
            {
                metrics[name] = value;
            }
        }

        return new JsonObject
        {
            ["id"] = p.Id,
            ["model"] = p.Model,
            ["version"] = p.Version,
            ["input"] = input,
            ["logs"] = p.Logs,
            ["output"] = output,
            ["data_removed"] = p.Output is not null && !Directory.Exists(Path.Combine(files.Directory, p.Id)),
            ["error"] = p.Error,
            ["status"] = p.Status,
            ["created_at"] = PredictionStore.Time(p.CreatedAt),
            ["started_at"] = p.StartedAt is { } started ? PredictionStore.Time(started) : null,
            ["completed_at"] = p.CompletedAt is { } completed ? PredictionStore.Time(completed) : null,
            ["source"] = p.Kind == PredictionKind.OpenAi ? "openai" : "api",
            ["metrics"] = metrics ?? [],
            ["webhook"] = p.Webhook,
            ["webhook_events_filter"] = p.Webhook is null ? null : new JsonArray([.. p.WebhookEvents.Select(e => (JsonNode)e)]),
            ["urls"] = new JsonObject
            {
                ["get"] = self,
                ["cancel"] = $"{self}/cancel",
                ["stream"] = $"{self}/stream",
            },
        };
    }
}
