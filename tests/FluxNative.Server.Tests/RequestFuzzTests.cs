using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>
/// A seeded mutation fuzz of the JSON request bodies of both APIs (Replicate's two create endpoints, OpenAI's image
/// generations) on the in-process test host: every answer is a JSON answer below 500. Each case is built from a valid
/// body by structural mutations (a value replaced by a hostile one, a field dropped, added or renamed, nesting) and
/// byte mutations (bytes flipped, inserted or cut, which also makes invalid UTF-8). The same seed gives the same cases;
/// a failure prints the case to replay.
/// </summary>
public sealed class RequestFuzzTests
{
    private const int Seed = 20240917;
    private const int CasesPerEndpoint = 1000;

    /// <summary>Marks a string node whose text is written into the body as is (so bodies can hold what no serializer writes).</summary>
    private const string RawMarker = "\u0001raw:";

    private static readonly (string Path, string Body)[] Seeds =
    [
        ("/v1/models/black-forest-labs/flux-dev/predictions",
            """{"input":{"prompt":"a red fox","aspect_ratio":"3:2","image_size":64,"num_outputs":1,"num_inference_steps":1,"guidance":3.5,"seed":7,"output_format":"png","output_quality":80,"megapixels":"0.25","speed_mode":"default","disable_safety_checker":true},"webhook":"https://example.com/hook","webhook_events_filter":["start","completed"],"stream":false}"""),
        ("/v1/predictions",
            """{"version":"black-forest-labs/flux-dev:0123abcd","input":{"prompt":"a fox","aspect_ratio":"custom","width":64,"height":64,"num_inference_steps":1,"seed":1,"output_format":"jpg"},"webhook_completed":"https://example.com/done"}"""),
        ("/v1/images/generations",
            """{"model":"flux-dev","prompt":"a lighthouse","n":1,"size":"64x64","response_format":"b64_json","output_format":"png","output_compression":50,"seed":3,"num_inference_steps":1,"guidance":4,"quality":"auto","background":"opaque","user":"u-1","stream":false}"""),
        ("/v1/images/generations",
            """{"prompt":"a field","aspect_ratio":"16:9","resolution":"64","num_inference_steps":1,"guidance_scale":2}"""),
    ];

    private static readonly string[] HostileStrings =
    [
        "", " ", "\u0000", "\u001f", "a\ud800", "\udc00", "\ud800\ud800", "\\", "\"", "%00", "../../etc/passwd", "NaN", "Infinity", "-0",
        "1e400", "0x10", "1:0", "0:1", "-1:1", "custom", "auto", "9999999999x9999999999", "64x", "x64", "64x64x64", "🦊", "\u202e", "ｆｌｕｘ",
        "http://127.0.0.1/", "http://[::ffff:10.0.0.1]/", "http://localhost./", "javascript:alert(1)", "2K", "0.0001K", "-1K", "1e3",
    ];

    private static readonly string[] HostileNumbers =
    [
        "0", "-1", "1", "2", "8", "9", "10", "50", "51", "64", "65", "100", "101", "2048", "4096", "1.5", "-0.0", "1e-300", "1e308", "-1e308", "1e400",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616", "4294967296", "2147483648", "0.1e1", "4.0",
    ];

    private static readonly string[] ContentTypes =
        ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream", "application/json; charset=latin1"];

    [Fact]
    public async Task Mutated_request_bodies_of_both_apis_never_answer_5xx()
    {
        // Sizes over 64 are refused and the queue is short, so the cases the server accepts cost little to run.
        // No webhook host resolves (nothing leaves the machine): a create is checked, its deliveries fail once and stop.
        await using ServerHost server = await ServerHost.StartAsync(o => o with { MaxImageSide = 64, QueueSize = 2, WebhookMaxAttempts = 1 },
            services: (services, options) => services.AddSingleton(new WebhookTargets(options,
                (_, _) => Task.FromException<IPAddress[]>(new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.HostNotFound)))));
        var random = new Random(Seed);
        var cases = new List<(int Index, string Path, byte[] Body, string ContentType)>();
        for (int k = 0; k < CasesPerEndpoint * 3; k++)
        {
            (string path, string seedBody) = Seeds[k % Seeds.Length];
            byte[] body = Mutate(seedBody, random);
            string contentType = random.Next(20) == 0 ? ContentTypes[random.Next(ContentTypes.Length)] : "application/json";
            cases.Add((k, path, body, contentType));
        }

        var failures = new ConcurrentBag<string>();
        var statuses = new ConcurrentDictionary<int, int>();
        var clock = Stopwatch.StartNew();
        await Parallel.ForEachAsync(cases, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (c, _) =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, c.Path) { Content = new ByteArrayContent(c.Body) };
            request.Content.Headers.TryAddWithoutValidation("Content-Type", c.ContentType);
            using HttpResponseMessage response = await server.Client.SendAsync(request);
            string text = await response.Content.ReadAsStringAsync();
            int status = (int)response.StatusCode;
            statuses.AddOrUpdate(status, 1, (_, n) => n + 1);
            if (status >= 500 || !IsJson(text))
            {
                failures.Add($"case {c.Index}: {status} for POST {c.Path} ({c.ContentType}) {Printable(c.Body)}\n  -> {text}");
            }
        });

        string summary = string.Join(", ", statuses.OrderBy(s => s.Key).Select(s => $"{s.Key}: {s.Value}"));
        Assert.True(failures.IsEmpty, $"{failures.Count} of {cases.Count} cases failed (statuses {summary}):\n{string.Join("\n", failures.OrderBy(f => f).Take(10))}");
        Assert.True(statuses.Keys.Count(s => s is >= 400 and < 500) >= 3, $"the mutations should reach several refusals: {summary}");
        Assert.True(statuses.Keys.Any(s => s < 300), $"some mutations should still be accepted: {summary}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the fuzz took {clock.Elapsed} (statuses {summary})");
    }

    /// <summary>One to three mutations of <paramref name="json"/>: mostly structural, sometimes of the bytes.</summary>
    private static byte[] Mutate(string json, Random random)
    {
        JsonNode root = JsonNode.Parse(json)!;
        int mutations = 1 + random.Next(3);
        for (int m = 0; m < mutations; m++)
        {
            root = MutateTree(root, random);
        }

        byte[] bytes = Encoding.UTF8.GetBytes(Write(root));
        if (random.Next(8) == 0)
        {
            bytes = MutateBytes(bytes, random);
        }

        return bytes;
    }

    private static JsonNode MutateTree(JsonNode root, Random random)
    {
        List<JsonNode> nodes = [.. Descendants(root)];
        JsonNode target = nodes[random.Next(nodes.Count)];
        switch (random.Next(6))
        {
            case 0 when target.Parent is not null:
                Replace(target, HostileValue(random));
                break;
            case 1 when target.Parent is JsonObject parent:
                parent.Remove(NameOf(target));
                break;
            case 2 when target is JsonObject obj:
                string name = random.Next(3) == 0 ? RawMarker + "\"\\ud800\"" : KnownOrRandomName(random);
                obj[name] = HostileValue(random);
                break;
            case 3 when target.Parent is JsonObject parent:
                string old = NameOf(target);
                parent.Remove(old);
                parent[old.ToUpperInvariant() + "_"] = target;
                break;
            case 4 when target.Parent is not null:
                Replace(target, new JsonArray(JsonNode.Parse(target.ToJsonString())));
                break;
            default:
                if (target.Parent is not null)
                {
                    Replace(target, JsonValue.Create(RawMarker + HostileNumbers[random.Next(HostileNumbers.Length)]));
                }

                break;
        }

        return root;
    }

    private static JsonNode HostileValue(Random random) => random.Next(8) switch
    {
        0 => JsonValue.Create(RawMarker + "null")!,
        1 => JsonValue.Create(RawMarker + (random.Next(2) == 0 ? "true" : "false"))!,
        2 => JsonValue.Create(RawMarker + HostileNumbers[random.Next(HostileNumbers.Length)])!,
        3 => new JsonArray(JsonValue.Create(RawMarker + Quoted(HostileStrings[random.Next(HostileStrings.Length)])), JsonValue.Create(1)),
        4 => new JsonObject { ["prompt"] = JsonValue.Create(RawMarker + Quoted(HostileStrings[random.Next(HostileStrings.Length)])) },
        5 => JsonValue.Create(new string('a', random.Next(2) == 0 ? 5000 : 70_000))!,
        6 => Nested(random.Next(10, 60)),
        _ => JsonValue.Create(RawMarker + Quoted(HostileStrings[random.Next(HostileStrings.Length)]))!,
    };

    private static readonly string[] FieldNames =
    [
        "prompt", "input", "version", "webhook", "webhook_events_filter", "webhook_completed", "stream", "image", "mask", "prompt_strength", "lora_weights",
        "go_fast", "steps", "n", "size", "quality", "style", "background", "moderation", "partial_images", "model", "seed", "response_format", "__proto__",
    ];

    private static string KnownOrRandomName(Random random) =>
        random.Next(4) == 0 ? $"f{random.Next(1000)}" : FieldNames[random.Next(FieldNames.Length)];

    private static JsonNode Nested(int depth)
    {
        JsonNode node = JsonValue.Create(1);
        for (int d = 0; d < depth; d++)
        {
            node = d % 2 == 0 ? new JsonArray(node) : new JsonObject { ["a"] = node };
        }

        return node;
    }

    /// <summary>A JSON string literal of <paramref name="text"/>, with a lone surrogate written as its \u escape.</summary>
    private static string Quoted(string text)
    {
        var builder = new StringBuilder("\"");
        foreach (char c in text)
        {
            if (c is '"' or '\\')
            {
                builder.Append('\\').Append(c);
            }
            else if (c < 0x20 || char.IsSurrogate(c))
            {
                builder.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
            }
            else
            {
                builder.Append(c);
            }
        }

        return builder.Append('"').ToString();
    }

    private static byte[] MutateBytes(byte[] bytes, Random random)
    {
        var list = new List<byte>(bytes);
        int at = list.Count == 0 ? 0 : random.Next(list.Count);
        switch (random.Next(4))
        {
            case 0 when list.Count > 0:
                list[at] = (byte)random.Next(256);
                break;
            case 1:
                list.Insert(at, (byte)(0x80 + random.Next(128)));
                break;
            case 2:
                list.RemoveRange(at, list.Count - at);
                break;
            default:
                list.InsertRange(at, [0xED, 0xA0, 0x80]);   // a UTF-16 surrogate encoded as if UTF-8: invalid UTF-8
                break;
        }

        return [.. list];
    }

    private static IEnumerable<JsonNode> Descendants(JsonNode node)
    {
        yield return node;
        IEnumerable<JsonNode?> children = node switch
        {
            JsonObject obj => obj.Select(p => p.Value),
            JsonArray array => array,
            _ => [],
        };
        foreach (JsonNode? child in children.ToList())
        {
            if (child is not null)
            {
                foreach (JsonNode d in Descendants(child))
                {
                    yield return d;
                }
            }
        }
    }

    private static string NameOf(JsonNode node) => node.GetPropertyName();

    private static void Replace(JsonNode target, JsonNode replacement)
    {
        switch (target.Parent)
        {
            case JsonObject obj:
                obj[target.GetPropertyName()] = replacement;
                break;
            case JsonArray array:
                array[target.GetElementIndex()] = replacement;
                break;
        }
    }

    /// <summary>Writes the tree as JSON, with the raw-marked strings (and property names) as their raw text.</summary>
    private static string Write(JsonNode? node)
    {
        switch (node)
        {
            case null:
                return "null";
            case JsonObject obj:
                return "{" + string.Join(",", obj.Select(p => (p.Key.StartsWith(RawMarker, StringComparison.Ordinal) ? p.Key[RawMarker.Length..] : Quoted(p.Key)) + ":" + Write(p.Value))) + "}";
            case JsonArray array:
                return "[" + string.Join(",", array.Select(Write)) + "]";
            default:
                if (node.GetValueKind() == JsonValueKind.String && node.GetValue<string>() is { } s)
                {
                    return s.StartsWith(RawMarker, StringComparison.Ordinal) ? s[RawMarker.Length..] : Quoted(s);
                }

                return node.ToJsonString();
        }
    }

    private static bool IsJson(string text)
    {
        try
        {
            using var document = JsonDocument.Parse(text);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static string Printable(byte[] body)
    {
        string text = Encoding.Latin1.GetString(body);
        var builder = new StringBuilder();
        foreach (char c in text.Length > 600 ? text[..600] + "…" : text)
        {
            builder.Append(c is >= ' ' and < (char)0x7f or '…' ? c.ToString() : $"\\x{(int)c:x2}");
        }

        return builder.ToString();
    }
}
