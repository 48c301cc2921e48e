"""Provider selection: which backend each service uses, from the environment."""

from __future__ import annotations

import pytest

from llm.chat import ModelProfile
from llm.openai_chat import OpenAIChat
from llm.provider import build_chat, model_settings


def test_no_key_and_no_base_url_means_the_local_model():
    assert model_settings({}, "IMGSTORY_STORY_MODEL").provider == "local"


@pytest.mark.parametrize(
    "env", [{"OPENAI_API_KEY": "sk-x"}, {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}]
)
def test_a_key_or_a_compatible_server_means_openai(env):
    settings = model_settings(env, "IMGSTORY_STORY_MODEL")
    assert settings.provider == "openai"
    assert settings.model == "gpt-4.1-mini"


def test_explicit_provider_wins_and_models_are_per_service():
    env = {
        "OPENAI_API_KEY": "sk-x",
        "IMGSTORY_PROVIDER": "local",
        "IMGSTORY_STORY_MODEL": "gpt-4.1",
        "IMGSTORY_TRANSLATION_MODEL": "gpt-4.1-nano",
    }
    assert model_settings(env, "IMGSTORY_STORY_MODEL").provider == "local"
    assert model_settings(env, "IMGSTORY_TRANSLATION_MODEL").model == "gpt-4.1-nano"


def test_unknown_provider_and_mmproj_without_model_are_refused():
    with pytest.raises(ValueError, match="IMGSTORY_PROVIDER"):
        model_settings({"IMGSTORY_PROVIDER": "magic"}, "IMGSTORY_STORY_MODEL")
    with pytest.raises(ValueError, match="IMGSTORY_LOCAL_MODEL"):
        model_settings({"IMGSTORY_LOCAL_MMPROJ": "/x.gguf"}, "IMGSTORY_STORY_MODEL")


def test_compatible_server_without_a_key_builds_an_openai_client():
    settings = model_settings({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "IMGSTORY_STORY_MODEL")
    chat = build_chat(settings)
    assert isinstance(chat, OpenAIChat) and chat.profile.sees_images


def test_each_backend_declares_what_its_model_is() -> None:
    remote = model_settings({"OPENAI_API_KEY": "sk-x"}, "X")
    served = model_settings({"IMGSTORY_LOCAL_SERVER_URL": "http://e:8081/v1"}, "X")
    in_process = model_settings({}, "X")
    assert build_chat(remote).profile == remote.profile == ModelProfile(sees_images=True)
    # Whether a local model sees images is read from it once it is loaded.
    assert served.profile == ModelProfile(small=True)
    assert in_process.profile == ModelProfile(small=True, one_at_a_time=True)
