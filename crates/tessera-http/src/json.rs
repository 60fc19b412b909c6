//! The JSON body extractor: axum's `Json`, with every rejection turned into a problem document that
//! says what was wrong (415 wrong content type, 400 malformed, 422 wrong shape, 413 too large).

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether the request's body is `application/x-www-form-urlencoded` (media types are compared
/// without regard to case).
pub(crate) fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// A body that is JSON or `application/x-www-form-urlencoded`, as OAuth endpoints (RFC 7009,
/// RFC 7662) accept.
pub struct JsonOrForm<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_form(req.headers()) {
            return ApiJson::from_request(req, state)
                .await
                .map(|ApiJson(v)| Self(v));
        }
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(FormRejection::FailedToDeserializeFormBody(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!(
                    "the form does not have the expected fields: {}",
                    without_values(&source_text(&e))
                ),
            )),
            Err(FormRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "the request body is larger than this server accepts",
                ))
            }
            Err(other) => Err(ApiError::bad_request("unreadable-body", other.body_text())),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "this route takes a JSON body: send Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed-json",
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            format!(
                "the body does not have the expected shape: {}",
                without_values(&source_text(&e))
            ),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body is larger than this server accepts",
            )
        }
        other => ApiError::bad_request("unreadable-body", other.body_text()),
    }
}

/// serde's message without axum's prefix; it names the field and position, never echoes values
/// beyond what the client sent.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// serde names the offending value ("invalid type: integer `12345678`, expected a string"): drop
/// it, since it may be a password sent as the wrong type, and keep what was expected.
pub(crate) fn without_values(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(start) = message.find(marker)
            && let Some(end) = message[start..].find(", expected")
        {
            let kind = marker.trim_end_matches(": ").trim_end();
            return format!("{}{kind}{}", &message[..start], &message[start + end..]);
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn offending_values_are_dropped() {
        assert_eq!(
            without_values(
                "password: invalid type: integer `12345678`, expected a string at line 1 column 40"
            ),
            "password: invalid type, expected a string at line 1 column 40"
        );
        assert_eq!(
            without_values("missing field `password` at line 1 column 17"),
            "missing field `password` at line 1 column 17"
        );
    }
}
