//! The store traits for a [`Db`](super::Db), each method handed to the shared function of the
//! same name. A macro rather than generic impls, which the orphan rule forbids for traits of
//! another crate: `impl_store_traits!(SqliteStore)` in each dialect's module.

macro_rules! impl_store_traits {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl tessera_core::UserStore for $store {
            async fn create_user(
                &self,
                user: &tessera_core::User,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::users::create_user(self, user).await
            }

            async fn user_by_id(
                &self,
                id: &tessera_core::UserId,
            ) -> Result<Option<tessera_core::User>, tessera_core::StoreError> {
                $crate::sql::users::user_by_id(self, id).await
            }

            async fn user_by_username(
                &self,
                username: &tessera_core::Username,
            ) -> Result<Option<tessera_core::User>, tessera_core::StoreError> {
                $crate::sql::users::user_by_username(self, username).await
            }

            async fn set_password_hash(
                &self,
                id: &tessera_core::UserId,
                password_hash: &str,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::set_password_hash(self, id, password_hash, at).await
            }

            async fn list_users(
                &self,
                after: Option<&tessera_core::Username>,
                limit: usize,
            ) -> Result<Vec<tessera_core::User>, tessera_core::StoreError> {
                $crate::sql::users::list_users(self, after, limit).await
            }

            async fn disabled_user_ids(
                &self,
            ) -> Result<Vec<tessera_core::UserId>, tessera_core::StoreError> {
                $crate::sql::users::disabled_user_ids(self).await
            }

            async fn set_user_disabled(
                &self,
                id: &tessera_core::UserId,
                disabled: bool,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::set_user_disabled(self, id, disabled, at).await
            }

            async fn set_user_roles(
                &self,
                id: &tessera_core::UserId,
                roles: &[String],
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::set_user_roles(self, id, roles, at).await
            }

            async fn rehash_password(
                &self,
                id: &tessera_core::UserId,
                old_hash: &str,
                new_hash: &str,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::rehash_password(self, id, old_hash, new_hash).await
            }

            async fn set_user_not_before(
                &self,
                id: &tessera_core::UserId,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::set_user_not_before(self, id, at).await
            }

            async fn delete_user(
                &self,
                deletion: &tessera_core::UserDeletion,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::users::delete_user(self, deletion).await
            }

            async fn user_by_email(
                &self,
                key: &str,
            ) -> Result<Option<tessera_core::User>, tessera_core::StoreError> {
                $crate::sql::email::user_by_email(self, key).await
            }

            async fn set_email(
                &self,
                id: &tessera_core::UserId,
                email: Option<&tessera_core::EmailAddress>,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::email::set_email(self, id, email).await
            }

            async fn create_code(
                &self,
                code: &tessera_core::AccountCode,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::email::create_code(self, code).await
            }

            async fn use_recovery_code(
                &self,
                hash: &tessera_core::TokenHash,
                password_hash: &str,
                now: tessera_core::Timestamp,
            ) -> Result<Option<tessera_core::UserId>, tessera_core::StoreError> {
                $crate::sql::email::use_recovery_code(self, hash, password_hash, now).await
            }

            async fn use_verification_code(
                &self,
                hash: &tessera_core::TokenHash,
                now: tessera_core::Timestamp,
            ) -> Result<Option<tessera_core::CodeVerified>, tessera_core::StoreError> {
                $crate::sql::email::use_verification_code(self, hash, now).await
            }

            async fn delete_expired_codes(
                &self,
                now: tessera_core::Timestamp,
                limit: usize,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::email::delete_expired_codes(self, now, limit).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::MailStore for $store {
            async fn enqueue_mail(
                &self,
                mail: &tessera_core::QueuedMail,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::mail::enqueue_mail(self, mail).await
            }

            async fn claim_mail(
                &self,
                now: tessera_core::Timestamp,
                lease_until: tessera_core::Timestamp,
                limit: usize,
            ) -> Result<Vec<tessera_core::QueuedMail>, tessera_core::StoreError> {
                $crate::sql::mail::claim_mail(self, now, lease_until, limit).await
            }

            async fn delete_mail(
                &self,
                id: &tessera_core::MailId,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::mail::delete_mail(self, id).await
            }

            async fn retry_mail(
                &self,
                id: &tessera_core::MailId,
                next_attempt_at: tessera_core::Timestamp,
                last_error: &str,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::mail::retry_mail(self, id, next_attempt_at, last_error).await
            }

            async fn queued_mail(&self) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::mail::queued_mail(self).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::SessionStore for $store {
            async fn create_session(
                &self,
                session: &tessera_core::Session,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::sessions::create_session(self, session).await
            }

            async fn session_by_secret(
                &self,
                secret_hash: &tessera_core::TokenHash,
            ) -> Result<Option<tessera_core::Session>, tessera_core::StoreError> {
                $crate::sql::sessions::session_by_secret(self, secret_hash).await
            }

            async fn touch_session(
                &self,
                handle: &tessera_core::SessionHandle,
                last_seen_at: tessera_core::Timestamp,
                expires_at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::sessions::touch_session(self, handle, last_seen_at, expires_at).await
            }

            async fn replace_session_data(
                &self,
                handle: &tessera_core::SessionHandle,
                expected_version: i64,
                data: &serde_json::Value,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::sessions::replace_session_data(self, handle, expected_version, data)
                    .await
            }

            async fn set_session_auth(
                &self,
                handle: &tessera_core::SessionHandle,
                auth: &tessera_core::AuthContext,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::sessions::set_session_auth(self, handle, auth).await
            }

            async fn delete_session(
                &self,
                handle: &tessera_core::SessionHandle,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::sessions::delete_session(self, handle).await
            }

            async fn session_owner(
                &self,
                handle: &tessera_core::SessionHandle,
            ) -> Result<Option<tessera_core::UserId>, tessera_core::StoreError> {
                $crate::sql::sessions::session_owner(self, handle).await
            }

            async fn sessions_of_user(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<Vec<tessera_core::Session>, tessera_core::StoreError> {
                $crate::sql::sessions::sessions_of_user(self, user).await
            }

            async fn delete_sessions_of_user(
                &self,
                user: &tessera_core::UserId,
                keep: Option<&tessera_core::SessionHandle>,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::sessions::delete_sessions_of_user(self, user, keep).await
            }

            async fn delete_expired_sessions(
                &self,
                now: tessera_core::Timestamp,
                limit: usize,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::sessions::delete_expired_sessions(self, now, limit).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::KeyStore for $store {
            async fn insert_key(
                &self,
                key: &tessera_core::StoredKey,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::keys::insert_key(self, key).await
            }

            async fn keys(&self) -> Result<Vec<tessera_core::StoredKey>, tessera_core::StoreError> {
                $crate::sql::keys::keys(self).await
            }

            async fn mark_key_rotated(
                &self,
                kid: &str,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::keys::mark_key_rotated(self, kid, at).await
            }

            async fn mark_key_retired(
                &self,
                kid: &str,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::keys::mark_key_retired(self, kid, at).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::RefreshStore for $store {
            async fn set_family_auth(
                &self,
                id: &tessera_core::FamilyId,
                auth: &tessera_core::AuthContext,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::refresh::set_family_auth(self, id, auth).await
            }

            async fn create_family(
                &self,
                family: &tessera_core::RefreshFamily,
                first: &tessera_core::RefreshTokenRecord,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::refresh::create_family(self, family, first).await
            }

            async fn refresh_token(
                &self,
                hash: &tessera_core::TokenHash,
            ) -> Result<
                Option<(
                    tessera_core::RefreshTokenRecord,
                    tessera_core::RefreshFamily,
                )>,
                tessera_core::StoreError,
            > {
                $crate::sql::refresh::refresh_token(self, hash).await
            }

            async fn rotate_refresh_token(
                &self,
                old: &tessera_core::TokenHash,
                new: &tessera_core::RefreshTokenRecord,
                now: tessera_core::Timestamp,
                family_expires_at: tessera_core::Timestamp,
            ) -> Result<tessera_core::Rotation, tessera_core::StoreError> {
                $crate::sql::refresh::rotate_refresh_token(self, old, new, now, family_expires_at)
                    .await
            }

            async fn add_refresh_token(
                &self,
                new: &tessera_core::RefreshTokenRecord,
                now: tessera_core::Timestamp,
                family_expires_at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::refresh::add_refresh_token(self, new, now, family_expires_at).await
            }

            async fn revoke_family(
                &self,
                id: &tessera_core::FamilyId,
                at: tessera_core::Timestamp,
                reason: &str,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::refresh::revoke_family(self, id, at, reason).await
            }

            async fn family(
                &self,
                id: &tessera_core::FamilyId,
            ) -> Result<Option<tessera_core::RefreshFamily>, tessera_core::StoreError> {
                $crate::sql::refresh::family(self, id).await
            }

            async fn families_of_user(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<Vec<tessera_core::RefreshFamily>, tessera_core::StoreError> {
                $crate::sql::refresh::families_of_user(self, user).await
            }

            async fn delete_expired_families(
                &self,
                now: tessera_core::Timestamp,
                limit: usize,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::refresh::delete_expired_families(self, now, limit).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::RevocationStore for $store {
            async fn add_revocation(
                &self,
                entry: &tessera_core::RevocationEntry,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::revocations::add_revocation(self, entry).await
            }

            async fn revocations(
                &self,
                now: tessera_core::Timestamp,
            ) -> Result<Vec<tessera_core::RevocationEntry>, tessera_core::StoreError> {
                $crate::sql::revocations::revocations(self, now).await
            }

            async fn allow_token(
                &self,
                token: &tessera_core::AllowedToken,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::revocations::allow_token(self, token).await
            }

            async fn allowed_tokens(
                &self,
                now: tessera_core::Timestamp,
            ) -> Result<Vec<tessera_core::AllowedToken>, tessera_core::StoreError> {
                $crate::sql::revocations::allowed_tokens(self, now).await
            }

            async fn disallow_token(&self, jti: &str) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::revocations::disallow_token(self, jti).await
            }

            async fn disallow_family(
                &self,
                id: &tessera_core::FamilyId,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::revocations::disallow_family(self, id).await
            }

            async fn disallow_user(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::revocations::disallow_user(self, user).await
            }

            async fn purge_expired(
                &self,
                now: tessera_core::Timestamp,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::Db::delete_expired_revocations(self, now).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::EventStore for $store {
            async fn record_event(
                &self,
                event: &tessera_core::NewEvent,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::events::record_event(self, event).await
            }

            async fn events(
                &self,
                before: Option<i64>,
                limit: usize,
            ) -> Result<Vec<tessera_core::SecurityEvent>, tessera_core::StoreError> {
                $crate::sql::events::events(self, before, limit).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::SecondFactorStore for $store {
            async fn put_pending_totp(
                &self,
                factor: &tessera_core::TotpFactor,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::put_pending_totp(self, factor).await
            }

            async fn totp_factor(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<Option<tessera_core::TotpFactor>, tessera_core::StoreError> {
                $crate::sql::second_factor::totp_factor(self, user).await
            }

            async fn confirm_totp(
                &self,
                user: &tessera_core::UserId,
                sealed_secret: &[u8],
                step: i64,
                recovery_codes: &[tessera_core::TokenHash],
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::confirm_totp(
                    self,
                    user,
                    sealed_secret,
                    step,
                    recovery_codes,
                    at,
                )
                .await
            }

            async fn use_totp_step(
                &self,
                user: &tessera_core::UserId,
                step: i64,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::use_totp_step(self, user, step).await
            }

            async fn delete_totp(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::delete_totp(self, user).await
            }

            async fn replace_recovery_codes(
                &self,
                user: &tessera_core::UserId,
                codes: &[tessera_core::TokenHash],
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::replace_recovery_codes(self, user, codes).await
            }

            async fn spend_recovery_code(
                &self,
                user: &tessera_core::UserId,
                hash: &tessera_core::TokenHash,
            ) -> Result<Option<usize>, tessera_core::StoreError> {
                $crate::sql::second_factor::spend_recovery_code(self, user, hash).await
            }

            async fn recovery_codes_left(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::second_factor::recovery_codes_left(self, user).await
            }

            async fn add_passkey(
                &self,
                passkey: &tessera_core::StoredPasskey,
                max: usize,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::passkeys::add_passkey(self, passkey, max).await
            }

            async fn passkeys_of(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<Vec<tessera_core::StoredPasskey>, tessera_core::StoreError> {
                $crate::sql::passkeys::passkeys_of(self, user).await
            }

            async fn passkey_by_credential(
                &self,
                credential_id: &[u8],
            ) -> Result<Option<tessera_core::StoredPasskey>, tessera_core::StoreError> {
                $crate::sql::passkeys::passkey_by_credential(self, credential_id).await
            }

            async fn passkey_used(
                &self,
                credential_id: &[u8],
                credential: &str,
                sign_count: u32,
                at: tessera_core::Timestamp,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::passkeys::passkey_used(self, credential_id, credential, sign_count, at)
                    .await
            }

            async fn rename_passkey(
                &self,
                user: &tessera_core::UserId,
                id: &str,
                name: &str,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::passkeys::rename_passkey(self, user, id, name).await
            }

            async fn delete_passkey(
                &self,
                user: &tessera_core::UserId,
                id: &str,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::passkeys::delete_passkey(self, user, id).await
            }

            async fn delete_passkeys(
                &self,
                user: &tessera_core::UserId,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::passkeys::delete_passkeys(self, user).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::ChallengeStore for $store {
            async fn create_challenge(
                &self,
                challenge: &tessera_core::LoginChallenge,
            ) -> Result<(), tessera_core::StoreError> {
                $crate::sql::second_factor::create_challenge(self, challenge).await
            }

            async fn attempt_challenge(
                &self,
                hash: &tessera_core::TokenHash,
                now: tessera_core::Timestamp,
                max_attempts: u32,
            ) -> Result<Option<tessera_core::LoginChallenge>, tessera_core::StoreError> {
                $crate::sql::second_factor::attempt_challenge(self, hash, now, max_attempts).await
            }

            async fn consume_challenge(
                &self,
                hash: &tessera_core::TokenHash,
            ) -> Result<bool, tessera_core::StoreError> {
                $crate::sql::second_factor::consume_challenge(self, hash).await
            }

            async fn delete_expired_challenges(
                &self,
                now: tessera_core::Timestamp,
                limit: usize,
            ) -> Result<usize, tessera_core::StoreError> {
                $crate::sql::second_factor::delete_expired_challenges(self, now, limit).await
            }
        }

        #[async_trait::async_trait]
        impl tessera_core::HealthCheck for $store {
            async fn ping(&self) -> Result<(), tessera_core::StoreError> {
                $crate::sql::Db::execute(self, "SELECT 1", &[]).await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_store_traits;
