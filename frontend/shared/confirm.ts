import { Component, Injectable, inject } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';
import { MAT_DIALOG_DATA, MatDialog, MatDialogModule } from '@angular/material/dialog';
import { firstValueFrom } from 'rxjs';

/** What a confirmation says: what will happen, in figures, and the button that does it. */
export interface ConfirmData {
  title: string;
  message: string;
  action: string;
}

/** The one confirmation dialog for actions that move money or touch many objects at once. */
@Component({
  selector: 'pm-confirm-dialog',
  imports: [MatDialogModule, MatButtonModule],
  template: `
    <h2 mat-dialog-title>{{ data.title }}</h2>
    <mat-dialog-content>
      <p id="confirm-message" data-testid="confirm-message">{{ data.message }}</p>
    </mat-dialog-content>
    <mat-dialog-actions align="end">
      <button mat-button type="button" [mat-dialog-close]="false" data-testid="confirm-cancel">Cancel</button>
      <button mat-flat-button type="button" [mat-dialog-close]="true" data-testid="confirm-ok">{{ data.action }}</button>
    </mat-dialog-actions>
  `,
})
export class ConfirmDialog {
  readonly data = inject<ConfirmData>(MAT_DIALOG_DATA);
}

/** Asks the user before an action; Cancel has the focus, so Enter alone does nothing rash. */
@Injectable({ providedIn: 'root' })
export class Confirm {
  private readonly dialog = inject(MatDialog);

  /** True only when the user chose the action (not Cancel, Escape or a click outside). */
  async ask(data: ConfirmData): Promise<boolean> {
    const ref = this.dialog.open<ConfirmDialog, ConfirmData, boolean>(ConfirmDialog, {
      data,
      role: 'alertdialog',
      ariaDescribedBy: 'confirm-message',
      autoFocus: 'first-tabbable',
      maxWidth: '32rem',
    });
    return (await firstValueFrom(ref.afterClosed())) === true;
  }
}
