using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;

namespace FluxNative.Server;

/// <summary>One field a request got wrong, as Replicate's <c>invalid_fields</c> lists them.</summary>
/// <param name="Field">The field's path (<c>input.prompt</c>).</param>
/// <param name="Description">What is wrong with it.</param>
/// <param name="Type"><c>invalid</c> (a bad value), <c>unsupported</c> (a feature this server does not implement) or <c>unknown</c> (no such field).</param>
internal sealed record InvalidField(string Field, string Description, string Type = "invalid");

/// <summary>A request the server refuses: an HTTP status, a message that says what is wrong and, when one is, the field at fault.</summary>
internal sealed class ApiException(int status, string message, string? field = null) : Exception(message)
{
    public int Status { get; } = status;

    public string? Field { get; } = field;

    /// <summary>Every field at fault (the one <see cref="Field"/> unless set), for <c>invalid_fields</c>.</summary>
    public IReadOnlyList<InvalidField> InvalidFields
    {
        get => invalidFields ?? (Field is null ? [] : [new InvalidField(Field, Message)]);
        init => invalidFields = value;
    }

    private readonly IReadOnlyList<InvalidField>? invalidFields;

    /// <summary>Seconds for a Retry-After header (429, 503), or null.</summary>
    public int? RetryAfterSeconds { get; init; }

    public static ApiException BadRequest(string message, string? field = null) => new(StatusCodes.Status400BadRequest, message, field);

    /// <summary>A 422 listing every field at fault: Replicate's answer to invalid input, and both APIs' answer to a feature this server does not implement.</summary>
    public static ApiException Unprocessable(IReadOnlyList<InvalidField> fields)
    {
        string message = fields.Count == 1
            ? fields[0].Description
            : string.Join("\n", fields.Select(f => $"- {f.Field}: {f.Description}"));
        return new ApiException(StatusCodes.Status422UnprocessableEntity, message, fields[0].Field) { InvalidFields = fields };
    }

    /// <summary>This refusal as Replicate answers invalid input: a 400 that names a field becomes a 422; anything else stays.</summary>
    public ApiException AsValidationError() =>
        Status == StatusCodes.Status400BadRequest && Field is not null
            ? new ApiException(StatusCodes.Status422UnprocessableEntity, Message, Field) { InvalidFields = InvalidFields }
            : this;
}

/// <summary>
/// The one error shape of every endpoint. It carries OpenAI's <c>error</c> object (what the OpenAI clients read) and
/// Replicate's problem-details fields <c>title</c>, <c>detail</c>, <c>status</c> (what the Replicate clients read).
/// </summary>
internal static class ApiErrors
{
    /// <summary>How every JSON answer is written: UTF-8 text as is (no \u002B for '+'); the content type is always JSON.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static JsonObject Body(int status, string message, string? field = null, IReadOnlyList<InvalidField>? fields = null)
    {
        fields ??= field is null ? [] : [new InvalidField(field, message)];
        string type = status switch
        {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        var body = new JsonObject
        {
            ["error"] = new JsonObject
            {
                ["message"] = message,
                ["type"] = type,
                ["param"] = field,
                ["code"] = type,
            },
            // Replicate's title for invalid input.
            ["title"] = status == StatusCodes.Status422UnprocessableEntity && fields.Count > 0 ? "Input validation failed" : ReasonPhrases.GetReasonPhrase(status),
            ["detail"] = message,
            ["status"] = status,
        };
        if (fields.Count > 0)
        {
            body["invalid_fields"] = new JsonArray([.. fields.Select(f => (JsonNode)new JsonObject { ["type"] = f.Type, ["field"] = f.Field, ["description"] = f.Description })]);
        }

        return body;
    }

    public static IResult Result(ApiException e) => new ErrorResult(e.Status, e.Message, e.Field, e.RetryAfterSeconds, e.InvalidFields);

    public static IResult Result(int status, string message, string? field = null) => new ErrorResult(status, message, field, null, null);

    public static Task WriteAsync(HttpContext context, int status, string message, string? field = null, int? retryAfter = null) =>
        new ErrorResult(status, message, field, retryAfter, null).ExecuteAsync(context);

    private sealed class ErrorResult(int status, string message, string? field, int? retryAfter, IReadOnlyList<InvalidField>? fields) : IResult
    {
        public async Task ExecuteAsync(HttpContext httpContext)
        {
            HttpResponse response = httpContext.Response;
            response.StatusCode = status;
            if (retryAfter is { } seconds)
            {
                response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
            }

            if (status == StatusCodes.Status401Unauthorized)
            {
                response.Headers.WWWAuthenticate = "Bearer";
            }

            response.ContentType = "application/json; charset=utf-8";
            await response.WriteAsync(Body(status, message, field, fields).ToJsonString(ApiErrors.JsonOptions), Encoding.UTF8, httpContext.RequestAborted).ConfigureAwait(false);
        }
    }
}

/// <summary>Reads a JSON request body within the size limit, answering what is wrong with it as an <see cref="ApiException"/>.</summary>
internal static class JsonBody
{
    public static async Task<JsonElement> ReadObjectAsync(HttpRequest request, long maxBytes)
    {
        JsonRequestChecks.RequireJsonContentType(request);
        if (request.ContentLength > maxBytes)
        {
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"The request body is {request.ContentLength} bytes; the limit is {maxBytes}.");
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        while (true)
        {
            int read;
            try
            {
                read = await request.Body.ReadAsync(chunk, request.HttpContext.RequestAborted).ConfigureAwait(false);
            }
            catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
            {
                throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"The request body is larger than the limit of {maxBytes} bytes.");
            }

            if (read == 0)
            {
                break;
            }

            if (buffer.Length + read > maxBytes)
            {
                throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"The request body is larger than the limit of {maxBytes} bytes.");
            }

            buffer.Write(chunk, 0, read);
        }

        if (buffer.Length == 0)
        {
            throw ApiException.BadRequest("The request body is empty; send a JSON object.");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(buffer.ToArray(), new JsonDocumentOptions { MaxDepth = 32 });
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is { } line ? $" (line {line + 1}, byte {e.BytePositionInLine + 1})" : string.Empty;
            throw ApiException.BadRequest($"The request body is not valid JSON{where}.");
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw ApiException.BadRequest($"The request body must be a JSON object, not {Describe(document.RootElement)}.");
            }

            JsonRequestChecks.RequireText(document.RootElement);

            return document.RootElement.Clone();
        }
    }

    public static string Describe(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };
}

/// <summary>Typed, checked access to the fields of a JSON object; a wrong type is a 400 that names the field.</summary>
/// <param name="value">The object.</param>
/// <param name="prefix">Prepended to field names in messages (<c>input.</c> for Replicate's input).</param>
internal readonly struct JsonFields(JsonElement value, string prefix = "")
{
    public JsonElement Value => value;

    public string Name(string field) => prefix + field;

    /// <summary>The field, or null when it is absent or JSON null.</summary>
    public JsonElement? Get(string field) =>
        value.TryGetProperty(field, out JsonElement element) && element.ValueKind != JsonValueKind.Null ? element : null;

    public bool Has(string field) => Get(field) is not null;

    public string? String(string field, int maxLength = 200)
    {
        if (Get(field) is not { } element)
        {
            return null;
        }

        if (element.ValueKind != JsonValueKind.String)
        {
            throw ApiException.BadRequest($"{Name(field)} must be a string (got {JsonBody.Describe(element)}).", Name(field));
        }

        string text = element.GetString()!;
        if (text.Length > maxLength)
        {
            throw ApiException.BadRequest($"{Name(field)} is {text.Length} characters long; the limit is {maxLength}.", Name(field));
        }

        return text;
    }

    public long? Long(string field, long min = long.MinValue, long max = long.MaxValue)
    {
        if (Get(field) is not { } element)
        {
            return null;
        }

        long number;
        if (element.ValueKind != JsonValueKind.Number)
        {
            throw ApiException.BadRequest($"{Name(field)} must be an integer (got {JsonBody.Describe(element)}).", Name(field));
        }

        if (!element.TryGetInt64(out number))
        {
            // 4.0 is an integer; 4.5 and 1e30 are not.
            if (!element.TryGetDouble(out double real) || real != Math.Floor(real) || real < long.MinValue || real >= long.MaxValue)
            {
                throw ApiException.BadRequest($"{Name(field)} must be an integer (got {element.GetRawText()}).", Name(field));
            }

            number = (long)real;
        }

        if (number < min || number > max)
        {
            throw ApiException.BadRequest(
                max == long.MaxValue
                    ? $"{Name(field)} must be at least {min} (got {number})."
                    : $"{Name(field)} must be between {min} and {max} (got {number}).", Name(field));
        }

        return number;
    }

    public int? Int(string field, int min = int.MinValue, int max = int.MaxValue) => (int?)Long(field, min, max);

    public double? Number(string field)
    {
        if (Get(field) is not { } element)
        {
            return null;
        }

        if (element.ValueKind != JsonValueKind.Number || !element.TryGetDouble(out double number) || !double.IsFinite(number))
        {
            throw ApiException.BadRequest($"{Name(field)} must be a number (got {JsonBody.Describe(element)}).", Name(field));
        }

        return number;
    }

    public bool? Bool(string field)
    {
        if (Get(field) is not { } element)
        {
            return null;
        }

        return element.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiException.BadRequest($"{Name(field)} must be true or false (got {JsonBody.Describe(element)}).", Name(field)),
        };
    }

    public JsonFields Object(string field)
    {
        if (Get(field) is not { } element)
        {
            throw ApiException.BadRequest($"{Name(field)} is required: a JSON object.", Name(field));
        }

        if (element.ValueKind != JsonValueKind.Object)
        {
            throw ApiException.BadRequest($"{Name(field)} must be an object (got {JsonBody.Describe(element)}).", Name(field));
        }

        return new JsonFields(element, Name(field) + ".");
    }
}
