using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;

namespace FluxNative.Server;

/// <summary>
/// What a JSON request body must be before any field is read: sent as JSON, and text all through. Both are checked up
/// front so that no endpoint meets a string it cannot read (which would be a 500) or a body a web page could send
/// without a CORS preflight.
/// </summary>
internal static class JsonRequestChecks
{
    /// <summary>
    /// Refuses (415) a body not declared as UTF-8 JSON: <c>application/json</c>, <c>application/*+json</c> or
    /// <c>text/json</c>. A web page may send <c>text/plain</c>, a form, or no type at all to any origin without a CORS
    /// preflight; requiring JSON makes the browser ask first, so a page cannot create predictions on a server without keys.
    /// </summary>
    public static void RequireJsonContentType(HttpRequest request)
    {
        string? given = request.ContentType;
        if (IsJson(given))
        {
            return;
        }

        string got = string.IsNullOrEmpty(given) ? "no Content-Type" : $"'{(given.Length > 100 ? given[..100] + "…" : given)}'";
        throw new ApiException(StatusCodes.Status415UnsupportedMediaType,
            $"The body must be UTF-8 JSON sent with Content-Type: application/json (got {got}).");
    }

    /// <summary>As <see cref="RequireJsonContentType"/>, for an endpoint whose body is optional and unused (cancel): only a body that is there must be JSON.</summary>
    public static void RequireJsonContentTypeIfBody(HttpRequest request)
    {
        bool hasBody = request.ContentLength > 0 || !string.IsNullOrEmpty(request.ContentType) || request.Headers.TransferEncoding.Count > 0;
        if (hasBody)
        {
            RequireJsonContentType(request);
        }
    }

    public static bool IsJson(string? contentType)
    {
        if (string.IsNullOrWhiteSpace(contentType) || !MediaTypeHeaderValue.TryParse(contentType, out MediaTypeHeaderValue? type))
        {
            return false;
        }

        string media = type.MediaType.Value ?? string.Empty;
        bool json = media.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || media.Equals("text/json", StringComparison.OrdinalIgnoreCase)
            || (media.StartsWith("application/", StringComparison.OrdinalIgnoreCase) && media.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
        string? charset = type.Charset.HasValue ? type.Charset.Value!.Trim('"') : null;
        return json && (charset is null || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase) || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>
    /// Refuses (400, naming the field) a body with a string or property name that is not text: bytes that are not
    /// UTF-8, or a <c>\uD800</c>-style escape of half a surrogate pair. The JSON parser lets both through, and reading
    /// such a string later throws, so every string of the body is checked here, once.
    /// </summary>
    public static void RequireText(JsonElement element, string path = "")
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                if (Problem(JsonMarshal.GetRawUtf8Value(element), () => element.GetString()) is { } problem)
                {
                    throw ApiException.BadRequest($"{(path.Length == 0 ? "the body" : path)} is {problem}.", path.Length == 0 ? null : path);
                }

                break;
            case JsonValueKind.Array:
                int index = 0;
                foreach (JsonElement item in element.EnumerateArray())
                {
                    RequireText(item, $"{path}[{index++}]");
                }

                break;
            case JsonValueKind.Object:
                foreach (JsonProperty property in element.EnumerateObject())
                {
                    if (Problem(JsonMarshal.GetRawUtf8PropertyName(property), () => property.Name) is { } nameProblem)
                    {
                        throw ApiException.BadRequest(
                            $"A property name in {(path.Length == 0 ? "the body" : path)} is {nameProblem}.", path.Length == 0 ? null : path);
                    }

                    RequireText(property.Value, path.Length == 0 ? property.Name : $"{path}.{property.Name}");
                }

                break;
        }
    }

    /// <summary>Why a string (its raw UTF-8 JSON, and how to read it) is not text, or null.</summary>
    private static string? Problem(ReadOnlySpan<byte> raw, Func<string?> read)
    {
        if (!System.Text.Unicode.Utf8.IsValid(raw))
        {
            return "not valid UTF-8 text: send the body as UTF-8";
        }

        try
        {
            _ = read();
            return null;
        }
        catch (InvalidOperationException)
        {
            // Valid UTF-8 that cannot be read: a \u escape of half a surrogate pair.
            return "not valid Unicode text: it holds half of a UTF-16 surrogate pair (an escape such as \\ud800 without its partner)";
        }
    }
}
