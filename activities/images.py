"""The images of a model call: references in the transcript become data URLs at call time."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.exceptions import ApplicationError

from contract import StoreErrorType
from conversation.images import ImageMissing, has_images, with_image_data


async def model_messages(
    session: AsyncSession, messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], bool]:
    """The messages as sent to the model, and whether they carry images."""
    try:
        return await with_image_data(session, messages), has_images(messages)
    except ImageMissing:
        raise ApplicationError(
            "An image attached to this message is no longer stored; send the message again "
            "with the image.",
            type=StoreErrorType.IMAGE_MISSING,
            non_retryable=True,
        ) from None
